"""The pre-flight check of pretrained weights: everything a config needs is on this machine, or one message.

Both command-line tools (``python -m das`` and the online loop) call :func:`check_weights` while
validating a config, before any model loads or any directory is created. It lists every model
and weight file the config needs (:func:`needed_weights`: the diffusion model, the reward's or
oracle's CLIP model and aesthetic head, the loop's featurizer) and decides for each, without
any network access, whether it is available: a local file or folder that exists, or a hub id
whose files are in the local Hugging Face cache. Whatever is missing is reported in one
:class:`~dasapp.config_checks.ConfigError` naming, for each item, the config field that points
at it and a command that fetches it with the installed tools, so one fix-up covers them all.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from das.adapters.loading import fetch_command
from dasapp.config_checks import ConfigError
from dasapp.factory import resolve_path

#: Where the LAION improved aesthetic predictor's head (``sac+logos+ava1-l14-linearMSE.pth``) is published.
AESTHETIC_HEAD_URL = (
    "https://github.com/christophschuhmann/improved-aesthetic-predictor/raw/main/sac+logos+ava1-l14-linearMSE.pth"
)
AESTHETIC_HEAD_FILE = "checkpoints/aesthetic/sac+logos+ava1-l14-linearMSE.pth"  # the configs' default place
WEIGHTS_DIR = "weights"  # where the suggested commands put hub models (relative to the working directory)
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
PIPELINE = "model_index.json"  # a diffusers pipeline folder's marker file
MODEL = "config.json"  # a transformers model's
TOKENIZER = "tokenizer_config.json"  # a tokenizer's or processor's
FAMILY_NAMES = {
    "sd": "Stable Diffusion pipeline",
    "sdxl": "SDXL pipeline",
    "lcm": "LCM pipeline",
    "pixel": "pixel-space model",
}


@dataclass(frozen=True)
class Need:
    """One model or weight file a config needs.

    Attributes:
        field: the config field that points at it (``model.path``, ``reward.kwargs.mlp_path``).
        value: its value: a hub id or a local folder, or a local file.
        what: a human name (``"Stable Diffusion pipeline"``).
        marker: for a hub model, the file whose presence in the hub cache marks it available; ``""`` for a
            single local file.
    """

    field: str
    value: str
    what: str
    marker: str = ""


def needed_weights(config) -> list[Need]:
    """Every model and weight file `config` (either tool's) needs, with the field naming it."""
    what = FAMILY_NAMES.get(config.model.family, f"{config.model.family} model")
    needs = [Need("model.path", str(config.model.path), what, _model_marker(config))]
    if "reward" in config:  # python -m das
        needs += _reward_needs(config.reward.name, config.reward.kwargs, "reward.kwargs")
    if "featurizer" in config and config.featurizer.kind == "clip":  # the online loop
        needs.append(Need("featurizer.path", str(config.featurizer.path), "CLIP featurizer", MODEL))
    if "oracle" in config and config.oracle.kind == "aesthetic":
        needs += _reward_needs("aesthetic", config.oracle, "oracle")
    return needs


def _model_marker(config) -> str:
    return "unet/config.json" if config.model.family == "pixel" else PIPELINE  # a pixel model has no pipeline file


def _reward_needs(name: str, kwargs, prefix: str) -> list[Need]:
    """The weights of reward `name` given its loading options `kwargs` (fields ``<prefix>.<option>``)."""
    needs = []
    if name in ("aesthetic", "multi", "clipscore"):
        needs.append(Need(f"{prefix}.clip_model", str(kwargs.get("clip_model", "")), "CLIP model", MODEL))
    if name in ("aesthetic", "multi"):
        needs.append(Need(f"{prefix}.mlp_path", str(kwargs.get("mlp_path", "")), "aesthetic head (LAION predictor)"))
    if name in ("clipscore", "multi") and kwargs.get("tokenizer"):
        needs.append(Need(f"{prefix}.tokenizer", str(kwargs.get("tokenizer")), "CLIP tokenizer", TOKENIZER))
    if name == "pickscore":
        needs.append(Need(f"{prefix}.model", str(kwargs.get("model", "")), "PickScore model", MODEL))
        needs.append(Need(f"{prefix}.processor", str(kwargs.get("processor", "")), "PickScore processor", TOKENIZER))
    return needs


def hub_cache_dir() -> str:
    """The Hugging Face hub cache as the environment names it now (``HF_HUB_CACHE``, else ``HF_HOME``/hub)."""
    from huggingface_hub import constants

    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):  # the second: its older name
        if os.environ.get(name):
            return os.environ[name]
    if os.environ.get("HF_HOME"):
        return os.path.join(os.environ["HF_HOME"], "hub")
    return constants.HF_HUB_CACHE


def is_available(need: Need) -> bool:
    """Whether `need` is on this machine: a local file or folder, or a hub id with its marker cached. No network."""
    if not need.value:
        return False
    local = resolve_path(need.value)
    if not need.marker:
        return local.is_file()
    if local.exists():  # a local folder: the loader names any part missing from its layout
        return True
    if not HUB_ID.fullmatch(need.value):
        return False
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(need.value, need.marker, cache_dir=hub_cache_dir())
    return isinstance(found, str)  # None: not cached; a sentinel: cached as missing on the hub


def how_to_fetch(need: Need) -> str:
    """Why a missing item is missing and its fix: a command that fetches it and the field to point at it."""
    if not need.marker:
        target = need.value or AESTHETIC_HEAD_FILE
        fetch = f"curl -L --create-dirs -o {target} {AESTHETIC_HEAD_URL}"
        return f"the file does not exist; fetch it with `{fetch}` and set --config.{need.field}={target}"
    if not HUB_ID.fullmatch(need.value):
        return (
            f"that folder does not exist; set --config.{need.field} to a local folder saved with "
            "save_pretrained, or to a hub id"
        )
    folder = f"{WEIGHTS_DIR}/{need.value}"
    return (
        f"not a local folder and not in the hub cache; fetch it with `{fetch_command(need.value, folder)}` "
        f"and set --config.{need.field}={folder} (that local folder)"
    )


def missing_weights_report(missing: list[Need]) -> str:
    """One message naming every missing item, its field and its fix."""
    items = "; ".join(
        f"({i}) {need.field}={need.value!r}, the {need.what}: {how_to_fetch(need)}"
        for i, need in enumerate(missing, start=1)
    )
    return (
        f"{len(missing)} pretrained weight(s) this config needs are not on this machine (checked without network, "
        f"hub cache {hub_cache_dir()}): {items}; then run the command again."
    )


def check_weights(config) -> None:
    """Raises one :class:`ConfigError` listing every model or weight file of `config` that is not available."""
    missing = [need for need in needed_weights(config) if not is_available(need)]
    if missing:
        raise ConfigError(missing_weights_report(missing))


__all__ = ["Need", "check_weights", "hub_cache_dir", "is_available", "missing_weights_report", "needed_weights"]
