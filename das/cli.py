"""Offline DAS sampling from a config file: ``python -m das --config config/sd.py:aesthetic``.

Also runs under ``accelerate launch -m das ...``: prompts are split across processes and
results gathered on the main process, which alone writes the run directory:

    <output_dir>/<run_name>/
      config.json     the resolved configuration
      images/         the selected image per prompt, ``0000.png`` ...
      particles/      every particle, ``0000_k0.png`` ...
      rewards.json    rewards per image (particle) and per prompt
      traces.json     ESS, λ, resampling and reward traces, log-normalizer, per prompt
      grid.png        the selected images in a grid

The configuration is validated before any model is loaded; errors a user can cause print
one line and exit non-zero.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from das.images import image_grid, save_png, to_uint8

FAMILIES = ("sd", "sdxl", "lcm", "pixel")
REPO_ROOT = Path(__file__).resolve().parent.parent


class ConfigError(ValueError):
    """A configuration a user can fix."""


def _resolve(path: str) -> Path:
    p = Path(path).expanduser()
    if p.is_absolute() or p.exists():
        return p
    return REPO_ROOT / p


def validate(config) -> None:
    """Checks a run configuration before anything expensive; raises :class:`ConfigError`."""
    from das.resampling import get_resampler
    from das.rewards.registry import check_reward_name
    from das.smc import SELECTIONS

    smc = config.smc
    if config.model.family not in FAMILIES:
        raise ConfigError(f"Unknown model.family {config.model.family!r}; choose one of: {', '.join(FAMILIES)}.")
    if not config.model.path:
        raise ConfigError("model.path is empty; set it to a hub id or a local model folder.")
    try:
        check_reward_name(config.reward.name)
        get_resampler(smc.resampling)
    except (ValueError, KeyError) as error:
        raise ConfigError(str(error).strip("'\"")) from None
    if smc.num_particles < 1:
        raise ConfigError(f"smc.num_particles must be at least 1, got {smc.num_particles}.")
    if not 0.0 <= smc.ess_threshold <= 1.0:
        raise ConfigError(f"smc.ess_threshold must lie in [0, 1], got {smc.ess_threshold}.")
    if smc.kl_coeff <= 0:
        raise ConfigError(f"smc.kl_coeff (α) must be positive, got {smc.kl_coeff}.")
    if smc.selection not in SELECTIONS:
        raise ConfigError(f"Unknown smc.selection {smc.selection!r}; choose one of: {', '.join(SELECTIONS)}.")
    if config.model.num_steps < 1:
        raise ConfigError(f"model.num_steps must be at least 1, got {config.model.num_steps}.")
    if config.model.dtype not in ("fp32", "fp16", "bf16"):
        raise ConfigError(f"Unknown model.dtype {config.model.dtype!r}; choose one of: fp32, fp16, bf16.")
    if config.num_prompts < 0 or config.batch_prompts < 1:
        raise ConfigError("num_prompts must be >= 0 (0 means all) and batch_prompts >= 1.")
    if not _resolve(config.prompt_file).is_file():
        raise ConfigError(f"The prompt file {config.prompt_file!r} does not exist; set prompt_file to a text file with one prompt per line.")
    mlp_path = config.reward.kwargs.get("mlp_path", "")
    if config.reward.name in ("aesthetic", "multi") and not (mlp_path and _resolve(mlp_path).is_file()):
        raise ConfigError(
            f"The aesthetic MLP weights {mlp_path!r} do not exist; download sac+logos+ava1-l14-linearMSE.pth "
            f"(LAION improved-aesthetic-predictor) and set --config.reward.kwargs.mlp_path to it."
        )
    run_dir = Path(config.output_dir) / config.run_name
    if run_dir.exists() and not config.overwrite:
        raise ConfigError(f"The run directory {str(run_dir)!r} already exists; choose another run_name or pass --config.overwrite=True.")


def read_prompts(path: str, num: int = 0) -> list[str]:
    """Non-empty lines of `path` (``#`` comments skipped); the first `num` (0: all)."""
    lines = [line.strip() for line in _resolve(path).read_text(encoding="utf-8").splitlines()]
    prompts = [line for line in lines if line and not line.startswith("#")]
    if not prompts:
        raise ConfigError(f"The prompt file {path!r} has no prompts; write one prompt per line.")
    return prompts[:num] if num else prompts


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
    if model.family == "sd":
        from das.adapters.stable_diffusion import StableDiffusionAdapter as cls
    elif model.family == "sdxl":
        from das.adapters.stable_diffusion import StableDiffusionXLAdapter as cls
    elif model.family == "lcm":
        from das.adapters.lcm import LCMAdapter as cls
    else:
        from das.adapters.pixel import PixelUNetAdapter as cls
    return cls.from_pretrained(model.path, **kwargs)


def sample_prompts(sampler, prompts: Sequence[str], batch: int, seed: int, offset: int) -> list[dict]:
    """Runs the sampler over `prompts` in batches; one record per prompt (CPU/numpy only)."""
    records = []
    for start in range(0, len(prompts), batch):
        chunk = list(prompts[start:start + batch])
        generator = torch.Generator(device=sampler.adapter.device).manual_seed(seed + offset + start)
        result = sampler.sample(chunk, generator)
        selected = result.selected_index
        for b, prompt in enumerate(chunk):
            records.append({
                "index": offset + start + b,
                "prompt": prompt,
                "particles": to_uint8(result.images[b]),
                "selected": to_uint8(result.selected[b]) if selected.dim() == 1 else None,
                "selected_index": selected[b].tolist(),
                "rewards": result.rewards[b].tolist(),
                "weights": result.weights[b].tolist(),
                "ess": result.ess[:, b].tolist(),
                "lam": result.lam[:, b].tolist(),
                "resampled": result.resampled[:, b].tolist(),
                "reward_trace": result.reward_trace[:, b].tolist(),
                "log_normalizer": float(result.log_normalizer[b]),
            })
    return records


def write_outputs(run_dir: Path, config, records: list[dict]) -> None:
    """Writes the run directory atomically (a temporary sibling renamed into place)."""
    records = sorted(records, key=lambda r: r["index"])
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{run_dir.name}.", dir=run_dir.parent))
    (tmp / "images").mkdir()
    (tmp / "particles").mkdir()
    per_image, per_prompt, traces, chosen = [], [], [], []
    for r in records:
        i = r["index"]
        for k, particle in enumerate(r["particles"]):
            name = f"particles/{i:04d}_k{k}.png"
            save_png(particle, tmp / name)
            per_image.append({"prompt_index": i, "prompt": r["prompt"], "particle": k, "file": name,
                              "reward": r["rewards"][k], "weight": r["weights"][k]})
        sel = r["selected_index"] if isinstance(r["selected_index"], int) else int(np.argmax(r["weights"]))
        image = r["selected"] if r["selected"] is not None else r["particles"][sel]
        save_png(image, tmp / f"images/{i:04d}.png")
        chosen.append(image)
        per_prompt.append({"prompt_index": i, "prompt": r["prompt"], "file": f"images/{i:04d}.png", "selected_particle": sel,
                           "selected_reward": r["rewards"][sel], "mean_reward": float(np.mean(r["rewards"])),
                           "weighted_reward": float(np.dot(r["weights"], r["rewards"])), "max_reward": max(r["rewards"])})
        traces.append({"prompt_index": i, "prompt": r["prompt"], "ess": r["ess"], "lam": r["lam"],
                       "resampled": r["resampled"], "reward_trace": r["reward_trace"], "log_normalizer": r["log_normalizer"]})
    summary = {"num_prompts": len(per_prompt), "mean_selected_reward": float(np.mean([p["selected_reward"] for p in per_prompt]))}
    (tmp / "rewards.json").write_text(json.dumps({"summary": summary, "per_prompt": per_prompt, "per_image": per_image}, indent=1))
    (tmp / "traces.json").write_text(json.dumps({"num_particles": config.smc.num_particles, "per_prompt": traces}))
    (tmp / "config.json").write_text(config.to_json_best_effort(indent=1))
    save_png(image_grid(np.stack(chosen)), tmp / "grid.png")
    if run_dir.exists():  # validated earlier: only with overwrite=True
        shutil.rmtree(run_dir)
    os.replace(tmp, run_dir)


def run(config) -> Path:
    """Validates `config`, samples every prompt with DAS, writes the run directory; returns it."""
    from accelerate import PartialState
    from accelerate.utils import gather_object

    validate(config)
    prompts = read_prompts(config.prompt_file, config.num_prompts)
    state = PartialState(cpu=config.device == "cpu")
    device = config.device or str(state.device)
    torch.manual_seed(config.seed)

    from das.rewards import make_reward
    from das.smc import DASSampler

    adapter = build_adapter(config.model, device)
    reward_kwargs = config.reward.kwargs.to_dict()
    if reward_kwargs.get("mlp_path"):
        reward_kwargs["mlp_path"] = str(_resolve(reward_kwargs["mlp_path"]))
    reward = make_reward(config.reward.name, **reward_kwargs)
    if isinstance(reward, torch.nn.Module):
        reward.to(device)
    smc = config.smc
    sampler = DASSampler(
        adapter, reward, kl_coeff=smc.kl_coeff, num_particles=smc.num_particles, resampling=smc.resampling,
        ess_threshold=smc.ess_threshold, tempering=smc.tempering, tempering_gamma=smc.tempering_gamma,
        selection=smc.selection, max_chunk_rows=smc.max_chunk_rows or None, progress=state.is_main_process,
    )
    indexed = list(range(len(prompts)))
    with state.split_between_processes(indexed) as local:
        local = list(local)
        records = sample_prompts(sampler, [prompts[i] for i in local], config.batch_prompts, config.seed,
                                 local[0] if local else 0) if local else []
    records = gather_object(records) if state.num_processes > 1 else records
    run_dir = Path(config.output_dir) / config.run_name
    if state.is_main_process:
        write_outputs(run_dir, config, records)
    state.wait_for_everyone()
    return run_dir


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: parses ``--config path.py:variant`` (with ``--config.x=y`` overrides) and runs."""
    from absl import flags
    from ml_collections import config_flags

    from das.adapters.loading import WeightsNotAvailableError
    from das.rewards.optional import MissingExtraError

    if "config" not in flags.FLAGS:
        config_flags.DEFINE_config_file("config", None, "Run configuration: path/to/file.py:variant.", lock_config=True)
    argv = list(sys.argv if argv is None else argv)
    try:
        flags.FLAGS(argv)
    except (flags.Error, ValueError, AttributeError, KeyError, TypeError) as error:
        print(f"das: {str(error).splitlines()[0]}", file=sys.stderr)
        return 2
    config = flags.FLAGS.config
    if config is None:
        print("das: no configuration given; pass --config config/sd.py:aesthetic (or another file:variant).", file=sys.stderr)
        return 2
    try:
        run_dir = run(config)
    except (ConfigError, WeightsNotAvailableError, MissingExtraError) as error:
        print(f"das: {error}", file=sys.stderr)
        return 2
    print(f"das: wrote {run_dir}")
    return 0
