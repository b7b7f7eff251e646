"""From names in a config to objects: the one registry mechanism both command-line tools use.

A :class:`Registry` maps the names a config field may hold to what they build, and checks
such a field with the one-line :class:`~dasapp.config_checks.ConfigError` every tool prints.
This module holds the das-level registries: model families (:data:`ADAPTERS`), tempering
schedules, resamplers and particle selections (tables owned by :mod:`das.tempering`,
:mod:`das.resampling` and :mod:`das.smc`, read on first use) and prompt lists
(:data:`PROMPT_LISTS`). The online loop's surrogates, oracles and featurizers live in
:mod:`online.builders`, built on the same :class:`Registry`: ``das`` may not import
``online`` or ``surrogate``.

It also holds the builders both tools share: paths relative to the repository
(:func:`resolve_path`), prompts (:func:`read_prompts`), adapters (:func:`build_adapter`),
rewards (:func:`build_reward`) and samplers (:func:`settings_from_config`, :func:`make_das`).
Heavy imports happen inside the builders, after validation.
"""

from __future__ import annotations

import functools
from pathlib import Path

from das.registry import ConfigError, Registry, load_object

REPO_ROOT = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- paths, prompts
def resolve_path(path: str) -> Path:
    """A path as given, or relative to the repository when it does not exist as given."""
    p = Path(path).expanduser()
    return p if p.is_absolute() or p.exists() else REPO_ROOT / p


PROMPT_LISTS = Registry("prompt list")


@PROMPT_LISTS.register("world", "world:train", "world:eval")
def _world_prompts() -> list[str]:
    # Plug-in point: the embedded example world (a package that depends on das) supplies its
    # prompt list; the import is lazy so that das imports nothing from world at import time.
    from world import PROMPTS

    return list(PROMPTS)


WORLD_PROMPTS = PROMPT_LISTS.names()


def read_prompts(source: str, num: int = 0) -> list[str]:
    """The prompts of a named list (:data:`PROMPT_LISTS`) or of a text file; the first `num` (0: all).

    A file holds one prompt per line (UTF-8, a byte-order mark allowed); empty lines and ``#``
    comments are skipped. A file that is missing, not a regular file, unreadable, larger than
    :data:`MAX_PROMPT_FILE_BYTES`, not UTF-8 text or without any prompt raises :class:`ConfigError`
    with one line naming it.
    """
    if source in PROMPT_LISTS:
        prompts = PROMPT_LISTS.build(source)
    else:
        lines = [line.strip() for line in _prompt_file_text(source).splitlines()]
        prompts = [line for line in lines if line and not line.startswith("#")]
        if not prompts:
            raise ConfigError(f"The prompt file {source!r} has no prompts; write one prompt per line.")
    return prompts[:num] if num else prompts


MAX_PROMPT_FILE_BYTES = 64 * 2**20  # a prompt file is text: anything larger is the wrong file
_PROMPT_FIX = "give a UTF-8 text file with one prompt per line."


def _prompt_file_text(source: str) -> str:
    """The decoded text of a prompt file; one-line :class:`ConfigError` for anything that is not UTF-8 text."""
    path = resolve_path(source)
    if not path.exists():
        raise ConfigError(f"The prompt file {source!r} does not exist; {_PROMPT_FIX}")
    if path.is_dir():
        raise ConfigError(f"The prompt file {source!r} is a folder, not a file; {_PROMPT_FIX}")
    if not path.is_file():
        raise ConfigError(f"The prompt file {source!r} is not a regular file (a pipe or a device); {_PROMPT_FIX}")
    try:
        if path.stat().st_size > MAX_PROMPT_FILE_BYTES:
            raise ConfigError(
                f"The prompt file {source!r} is larger than {MAX_PROMPT_FILE_BYTES // 2**20} MiB, so it is not a "
                f"prompt file; {_PROMPT_FIX}"
            )
        data = path.read_bytes()
    except OSError as error:
        raise ConfigError(
            f"The prompt file {source!r} cannot be read ({error.strerror or error}); {_PROMPT_FIX}"
        ) from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise ConfigError(
            f"The prompt file {source!r} is not UTF-8 text (an invalid byte on line {line}); save it as UTF-8 "
            "with one prompt per line."
        ) from None
    if "\x00" in text:
        raise ConfigError(
            f"The prompt file {source!r} holds NUL bytes, so it is not UTF-8 text (UTF-16?); save it as UTF-8 "
            "with one prompt per line."
        )
    return text


def check_prompt_source(source, where: str, field: str = "") -> None:
    """Refuses a prompt source :func:`read_prompts` could not read, before anything is created.

    A named list passes; a file must exist and is read and decoded in full (so a file that is
    not UTF-8 text, or holds no prompt, is refused at validation, not after the run began).

    Args:
        source: the configured prompt list name or file.
        where: ends the message for a missing file (what to give instead).
        field: the config field, prefixed to the other messages (e.g. ``"prompts.train_file"``).
    """
    if source in PROMPT_LISTS:
        return
    if not isinstance(source, str) or not source.strip() or not resolve_path(source).exists():
        raise ConfigError(f"The prompt file {source!r} {where}")
    try:
        read_prompts(source)
    except ConfigError as error:
        raise ConfigError(f"{field}: {error}" if field else str(error)) from None


# ----------------------------------------------------------------------------- adapters
ADAPTERS = Registry("model.family")  # family -> its adapter class (``from_pretrained``)
for _family, _target in {
    "sd": "das.adapters.stable_diffusion:StableDiffusionAdapter",
    "sdxl": "das.adapters.stable_diffusion:StableDiffusionXLAdapter",
    "lcm": "das.adapters.lcm:LCMAdapter",
    "pixel": "das.adapters.pixel:PixelUNetAdapter",
}.items():
    ADAPTERS.register(_family)(functools.partial(load_object, _target))
FAMILIES = ADAPTERS.names()


def build_adapter(model, device: str):
    """The adapter for ``config.model`` (family, path, dtype, num_steps, eta, guidance ...)."""
    kwargs = dict(num_steps=model.num_steps, dtype=model.dtype, device=device, guidance_scale=model.guidance_scale)
    if model.height:
        kwargs["height"] = model.height
    if model.width:
        kwargs["width"] = model.width
    if model.family != "lcm":
        kwargs["eta"] = model.eta
        if model.negative_prompt:
            kwargs["negative_prompt"] = model.negative_prompt
    local = resolve_path(model.path)  # a folder of the repository (the world's model) from any working directory
    path = str(local) if local.exists() else model.path  # else a hub id, or a path the loader reports missing
    adapter = ADAPTERS.build(model.family).from_pretrained(path, **kwargs)
    speed = {flag: bool(model[flag]) for flag in ("channels_last", "compile_unet") if model.get(flag, False)}
    return adapter.set_speed_options(**speed) if speed else adapter


# ----------------------------------------------------------------------------- rewards
def build_reward(reward, device: str):
    """The reward of a ``config.reward`` section (:func:`das.rewards.make_reward` by name), on `device`."""
    import torch

    from das.rewards import make_reward

    reward_kwargs = reward.kwargs.to_dict()
    if reward_kwargs.get("mlp_path"):
        reward_kwargs["mlp_path"] = str(resolve_path(reward_kwargs["mlp_path"]))
    built = make_reward(reward.name, **reward_kwargs)
    if isinstance(built, torch.nn.Module):
        built.to(device)
    return built


def check_reward_section(reward) -> None:
    """``config.reward``: a known name, and the aesthetic MLP weights where the reward needs them."""
    from das.rewards.registry import check_reward_name

    try:
        check_reward_name(reward.name)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    mlp_path = reward.kwargs.get("mlp_path", "")
    if reward.name in ("aesthetic", "multi") and not (mlp_path and resolve_path(mlp_path).is_file()):
        raise ConfigError(
            f"The aesthetic MLP weights {mlp_path!r} do not exist; download sac+logos+ava1-l14-linearMSE.pth "
            f"(LAION improved-aesthetic-predictor) and set --config.reward.kwargs.mlp_path to it."
        )


# ----------------------------------------------------------------------------- samplers
TEMPERINGS = Registry("smc.tempering", "das.tempering:TEMPERINGS", sort=True)
RESAMPLERS = Registry("smc.resampling", "das.resampling:RESAMPLERS", sort=True)
SELECTIONS = Registry("smc.selection", "das.smc:SELECTIONS")


def settings_from_config(smc, progress: bool = False, **overrides):
    """The :class:`~das.smc_settings.DASSettings` of a ``config.smc`` section (`overrides`: settings fields, they win).

    The section's tempering fields (``tempering``, ``tempering_gamma``, ``tempering_start``)
    become one schedule object and its gradient fields one
    :class:`~das.proposals.GradientOptions`; fields a section lacks (``selection``,
    ``tempering_start``, the gradient and ``autocast`` fields) take their defaults.
    """
    from dataclasses import replace

    from das.proposals import GradientOptions
    from das.smc_settings import DASSettings
    from das.tempering import tempering_from_options

    ess_threshold = float(smc.ess_threshold)
    tempering = tempering_from_options(
        smc.tempering,
        start=int(smc.get("tempering_start", 0)),
        gamma=float(smc.tempering_gamma),
        ess_threshold=ess_threshold if ess_threshold > 0 else 0.5,  # adaptive tempering's ESS target
    )
    gradient = GradientOptions(
        smc.get("gradient", "auto"),
        every=int(smc.get("gradient_every", 1)),
        after=float(smc.get("gradient_after", 0.0)),
        reuse=bool(smc.get("gradient_reuse", False)),
    )
    settings = DASSettings(
        kl_coeff=float(smc.kl_coeff),
        num_particles=int(smc.num_particles),
        resampling=smc.resampling,
        ess_threshold=ess_threshold,
        tempering=tempering,
        selection=smc.get("selection", "max_weight"),
        gradient=gradient,
        max_chunk_rows=int(smc.max_chunk_rows) or None,
        autocast=smc.get("autocast", "") or None,
        progress=progress,
    )
    return replace(settings, **overrides) if overrides else settings


def make_das(adapter, smc, progress: bool = False, proposal_adapter=None, **overrides):
    """A :class:`~das.smc.DASSampler` on `adapter` with the ``config.smc`` settings (`overrides` win)."""
    from das.smc import DASSampler

    return DASSampler(adapter, settings_from_config(smc, progress, **overrides), proposal_adapter)


__all__ = [
    "ADAPTERS",
    "FAMILIES",
    "PROMPT_LISTS",
    "REPO_ROOT",
    "RESAMPLERS",
    "SELECTIONS",
    "TEMPERINGS",
    "WORLD_PROMPTS",
    "Registry",
    "build_adapter",
    "build_reward",
    "check_prompt_source",
    "check_reward_section",
    "make_das",
    "read_prompts",
    "resolve_path",
    "settings_from_config",
]
