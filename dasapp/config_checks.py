"""Checks of the config sections both command-line tools share (model, smc, device).

Every check is pure (it reads nothing heavy and creates nothing) and raises
:class:`ConfigError` with one sentence naming the field and the fix. Numbers must be real
numbers (``True`` is not 1), finite, and within range: a NaN that slipped through would
otherwise produce NaN images that a paid oracle is then asked about.
"""

from __future__ import annotations

import math
import re

from das.adapters.common import DTYPES  # the model dtypes a config may name (the adapters' table)
from das.registry import ConfigError, check_choice  # the one error every check raises

#: The dtypes ``smc.autocast`` may name (:data:`das.smc.AUTOCAST_DTYPES`).
AUTOCAST = ("bf16", "fp16")


def check_number(
    value,
    field: str,
    *,
    integer: bool = False,
    minimum: float | None = None,
    above: float | None = None,
    maximum: float | None = None,
) -> None:
    """`value` is a finite number (an integer when `integer`) with ``minimum <= value <= maximum``
    and ``value > above``."""
    kind = "an integer" if integer else "a number"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{field} must be {kind}, got {value!r}.")
    if not math.isfinite(value):
        raise ConfigError(f"{field} must be finite, got {value}.")
    if integer and not float(value).is_integer():
        raise ConfigError(f"{field} must be {kind}, got {value!r}.")
    if minimum is not None and value < minimum:
        raise ConfigError(f"{field} must be at least {minimum:g}, got {value}.")
    if above is not None and value <= above:
        raise ConfigError(f"{field} must be greater than {above:g}, got {value}.")
    if maximum is not None and value > maximum:
        raise ConfigError(f"{field} must be at most {maximum:g}, got {value}.")


def check_flag(value, field: str) -> None:
    if not isinstance(value, bool):
        raise ConfigError(f"{field} must be True or False, got {value!r}.")


def check_device(device) -> None:
    """``""`` (let accelerate choose), ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` on a machine that has it."""
    if not isinstance(device, str) or not re.fullmatch(r"|cpu|cuda(:\d+)?", device):
        raise ConfigError(f"Unknown device {device!r}; choose '' (automatic), 'cpu', 'cuda' or 'cuda:N'.")
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(
                f"device {device!r} was asked for but this machine has no CUDA device; use --config.device=cpu."
            )
        index = int(device.split(":")[1]) if ":" in device else 0
        if index >= torch.cuda.device_count():
            raise ConfigError(
                f"device {device!r} does not exist; this machine has {torch.cuda.device_count()} CUDA device(s)."
            )


def check_seed(seed) -> None:
    check_number(seed, "seed", integer=True, minimum=0, maximum=2**62 - 1)


def check_model_section(model) -> None:
    """``config.model``: family, path, dtype, steps, eta, guidance, size, and the speed flags where present."""
    from dasapp.factory import ADAPTERS

    ADAPTERS.check(model.family)
    check_choice(model.dtype, tuple(DTYPES), "model.dtype")
    if not isinstance(model.path, str) or not model.path:
        raise ConfigError("model.path is empty; set it to a hub id or a local model folder.")
    check_number(model.num_steps, "model.num_steps", integer=True, minimum=1, maximum=10_000)
    check_number(model.eta, "model.eta", minimum=0, maximum=1)
    check_number(model.guidance_scale, "model.guidance_scale", minimum=0, maximum=1_000)
    for side in ("height", "width"):
        check_number(model[side], f"model.{side}", integer=True, minimum=0, maximum=16_384)
        if model[side] % 8:
            raise ConfigError(f"model.{side} must be a multiple of 8 (0: the model's own size), got {model[side]}.")
    for flag in ("channels_last", "compile_unet"):  # opt-in speed options (the configs declare them off)
        if flag in model:  # a section built by hand may lack them: off
            check_flag(model[flag], f"model.{flag}")


def check_smc_section(smc, num_steps: int) -> None:
    """``config.smc``: the DAS settings both tools share (``selection`` where the tool has it)."""
    from dasapp.factory import RESAMPLERS, SELECTIONS, TEMPERINGS

    check_number(smc.kl_coeff, "smc.kl_coeff (α)", above=0)
    check_number(smc.num_particles, "smc.num_particles", integer=True, minimum=1, maximum=65_536)
    check_number(smc.ess_threshold, "smc.ess_threshold", minimum=0, maximum=1)
    RESAMPLERS.check(smc.resampling)
    TEMPERINGS.check(smc.tempering)
    check_number(smc.tempering_gamma, "smc.tempering_gamma", above=0, maximum=1e6)
    check_number(smc.max_chunk_rows, "smc.max_chunk_rows (0: no chunking)", integer=True, minimum=0)
    if "tempering_start" in smc:
        check_number(smc.tempering_start, "smc.tempering_start", integer=True, minimum=0, maximum=num_steps)
    if "selection" in smc:
        SELECTIONS.check(smc.selection)
    if "autocast" in smc:  # opt-in autocast of the model passes ('' off, as where absent)
        check_choice(smc.autocast, ("", *AUTOCAST), "smc.autocast")
    check_proposal_gradient(smc)


def check_proposal_gradient(smc) -> None:
    """``smc.gradient`` and its schedule (:mod:`das.proposals`), where the section has them."""
    from das.proposals import GRADIENTS

    if "gradient" in smc:
        check_choice(smc.gradient, ("auto", *GRADIENTS), "smc.gradient")
    if "gradient_every" in smc:
        check_number(smc.gradient_every, "smc.gradient_every", integer=True, minimum=1, maximum=100_000)
    if "gradient_after" in smc:
        check_number(smc.gradient_after, "smc.gradient_after", minimum=0)
        if smc.gradient_after >= 1:
            raise ConfigError(f"smc.gradient_after must be below 1 (a fraction of steps), got {smc.gradient_after}.")
    if "gradient_reuse" in smc:
        check_flag(smc.gradient_reuse, "smc.gradient_reuse")


def check_shared_sections(config) -> None:
    """The sections both tools share: ``model``, ``smc`` (against the model's steps), ``seed`` and ``device``."""
    check_model_section(config.model)
    check_smc_section(config.smc, config.model.num_steps)
    check_seed(config.seed)
    check_device(config.device)


__all__ = [
    "AUTOCAST",
    "DTYPES",
    "ConfigError",
    "check_choice",
    "check_device",
    "check_flag",
    "check_model_section",
    "check_number",
    "check_proposal_gradient",
    "check_seed",
    "check_shared_sections",
    "check_smc_section",
]
