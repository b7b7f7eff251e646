"""Checks a loop config before any model is loaded: one clear line per mistake."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from online.builders import WORLD_PROMPTS, featurizer_dim, resolve_path
from online.guidance import GUIDANCE_MODES
from online.oracles import ORACLE_KINDS

MODES = ("train", "evaluate")
FAMILIES = ("sd", "sdxl", "lcm", "pixel")
FEATURIZERS = ("clip", "world")
TRACKERS = ("", "tensorboard", "wandb")


class ConfigError(ValueError):
    """A mistake in the config that the user can fix; the message says how."""


def _one_of(value, valid, field: str) -> None:
    if value not in valid:
        shown = ", ".join(repr(v) if v == "" else str(v) for v in valid)
        raise ConfigError(f"Unknown {field} {value!r}; choose one of: {shown}.")


def _positive(value, field: str, minimum: float = 1) -> None:
    if value < minimum:
        raise ConfigError(f"{field} must be at least {minimum:g}, got {value}.")


def run_directory(config) -> Path:
    return Path(config.resume_from) if config.resume_from else Path(config.output_dir) / config.run_name


def validate(config) -> None:
    """Raises :class:`ConfigError` for anything that would fail later; loads no model."""
    from das.resampling import RESAMPLERS
    from das.tempering import TEMPERINGS
    from surrogate import SURROGATES

    _one_of(config.mode, MODES, "mode")
    _one_of(config.model.family, FAMILIES, "model.family")
    _one_of(config.model.dtype, ("fp32", "fp16", "bf16"), "model.dtype")
    _one_of(config.featurizer.kind, FEATURIZERS, "featurizer.kind")
    _one_of(config.oracle.kind, ORACLE_KINDS, "oracle.kind")
    _one_of(config.surrogate.kind, sorted(SURROGATES), "surrogate.kind")
    _one_of(config.smc.resampling, sorted(RESAMPLERS), "smc.resampling")
    _one_of(config.smc.tempering, sorted(TEMPERINGS), "smc.tempering")
    _one_of(config.smc.guidance, GUIDANCE_MODES, "smc.guidance")
    _one_of(config.tracker, TRACKERS, "tracker")
    if config.tracker and importlib.util.find_spec(config.tracker) is None:
        raise ConfigError(f"tracker {config.tracker!r} is not installed; pip install {config.tracker} or set --config.tracker=''.")

    smc, loop = config.smc, config.loop
    _positive(smc.num_particles, "smc.num_particles")
    if not 0.0 <= smc.ess_threshold <= 1.0:
        raise ConfigError(f"smc.ess_threshold must lie in [0, 1], got {smc.ess_threshold}.")
    if smc.kl_coeff <= 0:
        raise ConfigError(f"smc.kl_coeff (α) must be positive, got {smc.kl_coeff}.")
    _positive(config.model.num_steps, "model.num_steps")
    _positive(loop.num_rounds, "loop.num_rounds")
    _positive(loop.initial_queries, "loop.initial_queries")
    _positive(loop.queries_per_round, "loop.queries_per_round")
    _positive(loop.images_per_prompt, "loop.images_per_prompt")
    if loop.images_per_prompt > smc.num_particles:
        raise ConfigError(
            f"loop.images_per_prompt ({loop.images_per_prompt}) exceeds smc.num_particles ({smc.num_particles}): "
            f"a prompt's particles allow at most {smc.num_particles} queries; lower it or raise num_particles."
        )
    if loop.queries_per_round % loop.images_per_prompt:
        raise ConfigError(
            f"loop.queries_per_round ({loop.queries_per_round}) must be a multiple of loop.images_per_prompt ({loop.images_per_prompt})."
        )
    if config.evaluate.images_per_prompt > smc.num_particles or config.evaluate.images_per_prompt < 1:
        raise ConfigError(f"evaluate.images_per_prompt must lie in 1..smc.num_particles ({smc.num_particles}), got {config.evaluate.images_per_prompt}.")
    if config.oracle.noise_std < 0:
        raise ConfigError(f"oracle.noise_std must be non-negative, got {config.oracle.noise_std}.")
    if config.oracle.max_retries < 0 or config.oracle.timeout_s <= 0 or config.oracle.batch_size < 0:
        raise ConfigError("oracle.max_retries and oracle.batch_size must be >= 0 and oracle.timeout_s > 0.")
    if config.oracle.kind == "external" and not list(config.oracle.command):
        raise ConfigError("oracle.kind='external' needs oracle.command, an argv list such as ['python', 'rate.py'].")
    if config.oracle.kind == "aesthetic" and not resolve_path(config.oracle.mlp_path).is_file():
        raise ConfigError(
            f"The aesthetic predictor weights {config.oracle.mlp_path!r} do not exist; download "
            "sac+logos+ava1-l14-linearMSE.pth (LAION improved-aesthetic-predictor) and set --config.oracle.mlp_path to it."
        )
    if not config.model.path:
        raise ConfigError("model.path is empty; set it to a hub id or a local model folder.")
    if config.model.family == "pixel" and not resolve_path(config.model.path).is_dir():
        raise ConfigError(f"The model folder {config.model.path!r} does not exist; set --config.model.path to a saved pixel-space model.")
    for field in ("train_file", "eval_file"):
        source = config.prompts[field]
        if source not in WORLD_PROMPTS and not resolve_path(source).is_file():
            raise ConfigError(f"The prompt file {source!r} (prompts.{field}) does not exist; give a text file with one prompt per line.")

    if config.mode == "evaluate":
        _validate_evaluate(config)
    else:
        _validate_run_directory(config)


def _validate_evaluate(config) -> None:
    from surrogate import SurrogateCheckpointError, check_header, read_header

    if not config.reward_model_path:
        raise ConfigError("Evaluate mode needs --config.reward_model_path=<run_dir>/round_<k> (or its surrogate.safetensors).")
    path = surrogate_path(Path(config.reward_model_path))
    if not path.is_file():
        raise ConfigError(f"No surrogate checkpoint at {str(path)!r}; point --config.reward_model_path at a complete round directory.")
    try:
        header = read_header(path)
        check_header(header, path, config.surrogate.kind, featurizer_dim(config))
    except SurrogateCheckpointError as error:
        raise ConfigError(str(error)) from None
    out = Path(config.output_dir) / config.run_name
    if out.exists() and any(out.iterdir()) and not config.overwrite:
        raise ConfigError(f"The evaluation directory {str(out)!r} already exists; choose another --config.run_name or pass --config.overwrite=True.")


def _validate_run_directory(config) -> None:
    run_dir = run_directory(config)
    if config.resume_from:
        if not (run_dir / "config.json").is_file():
            raise ConfigError(f"Cannot resume from {str(run_dir)!r}: it holds no config.json of a run; check --config.resume_from.")
    elif run_dir.exists() and any(run_dir.iterdir()) and not config.overwrite:
        raise ConfigError(
            f"The run directory {str(run_dir)!r} already exists; resume it with --config.resume_from={run_dir}, "
            "choose another --config.run_name, or pass --config.overwrite=True."
        )


def surrogate_path(path: Path) -> Path:
    """A round directory or a surrogate file -> the surrogate file."""
    return path / "surrogate.safetensors" if path.is_dir() else path
