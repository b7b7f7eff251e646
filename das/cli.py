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

from das.config_checks import (
    ConfigError,
    check_device,
    check_flag,
    check_model_section,
    check_number,
    check_seed,
    check_smc_section,
)
from das.images import image_grid, save_png, to_uint8
from das.run_dirs import RunDirError, check_removable, check_run_name, write_marker

REPO_ROOT = Path(__file__).resolve().parent.parent
RUN_KIND = "das-sample"
EXAMPLE = "config/sd.py:aesthetic"
HELP = """usage: python -m das --config config/<MODEL>.py:<VARIANT> [--config.<field>=<value> ...]

Samples every prompt of a prompt file with DAS (SMC over the denoising chain) towards
p_pre(x)·exp(r(x)/α) and writes the chosen image per prompt, every particle, rewards and traces.

Config files and variants:
  config/sd.py     Stable Diffusion 1.5: aesthetic, pick, clip, multi, jpeg
  config/sdxl.py   SDXL (same variants)
  config/lcm.py    Latent Consistency Model (same variants)

Main fields (override with --config.<field>=<value>):
  run_name, output_dir, overwrite   the outputs go to <output_dir>/<run_name> (a plain name);
                                    overwrite replaces an earlier output of this tool there, nothing else
  prompt_file, num_prompts, batch_prompts, seed, device ('' automatic, 'cpu', 'cuda', 'cuda:N')
  model.path, model.dtype, model.num_steps, model.guidance_scale
  reward.name, reward.kwargs.*
  smc.kl_coeff (α), smc.num_particles, smc.resampling, smc.tempering, smc.tempering_gamma, smc.selection

Example:
  python -m das --config config/sd.py:jpeg --config.num_prompts=4 --config.run_name=jpeg-test

Exit status: 0 done, 2 bad input (nothing written).
"""


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
    check_model_section(config.model)
    try:
        check_reward_name(config.reward.name)
        get_resampler(smc.resampling)
    except (ValueError, KeyError) as error:
        raise ConfigError(str(error).strip("'\"")) from None
    check_smc_section(smc, config.model.num_steps)
    if smc.selection not in SELECTIONS:
        raise ConfigError(f"Unknown smc.selection {smc.selection!r}; choose one of: {', '.join(SELECTIONS)}.")
    check_number(config.num_prompts, "num_prompts (0: all)", integer=True, minimum=0)
    check_number(config.batch_prompts, "batch_prompts", integer=True, minimum=1)
    check_seed(config.seed)
    check_device(config.device)
    check_flag(config.overwrite, "overwrite")
    if not _resolve(config.prompt_file).is_file():
        raise ConfigError(f"The prompt file {config.prompt_file!r} does not exist; set prompt_file to a text file with one prompt per line.")
    mlp_path = config.reward.kwargs.get("mlp_path", "")
    if config.reward.name in ("aesthetic", "multi") and not (mlp_path and _resolve(mlp_path).is_file()):
        raise ConfigError(
            f"The aesthetic MLP weights {mlp_path!r} do not exist; download sac+logos+ava1-l14-linearMSE.pth "
            f"(LAION improved-aesthetic-predictor) and set --config.reward.kwargs.mlp_path to it."
        )
    try:
        _check_run_directory(config)
    except RunDirError as error:
        raise ConfigError(str(error)) from None


def _check_run_directory(config) -> None:
    """The output directory is a plain name inside output_dir; an existing one is replaced only
    when it is an earlier output of this tool and ``overwrite`` is set."""
    check_run_name(config.run_name)
    if not str(config.output_dir).strip():
        raise ConfigError("output_dir is empty; set it to a folder such as outputs/das.")
    output_dir = Path(config.output_dir)
    if output_dir.exists() and not output_dir.is_dir():
        raise ConfigError(f"output_dir {str(output_dir)!r} is a file, not a folder; choose another output_dir.")
    run_dir = output_dir / config.run_name
    if run_dir.is_symlink() or run_dir.exists():
        if not config.overwrite:
            raise ConfigError(f"The run directory {str(run_dir)!r} already exists; choose another run_name or pass --config.overwrite=True.")
        check_removable(run_dir, output_dir, RUN_KIND)


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
    tmp = Path(tempfile.mkdtemp(prefix=f".{run_dir.name}.", suffix=".tmp", dir=run_dir.parent))
    try:
        _write_files(tmp, config, records)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # the temporary folder is ours; the old outputs are untouched
        raise
    if run_dir.exists() or run_dir.is_symlink():  # validated earlier: an output of this tool, overwrite=True
        check_removable(run_dir, run_dir.parent, RUN_KIND)
        old = Path(tempfile.mkdtemp(prefix=f".{run_dir.name}.old.", suffix=".tmp", dir=run_dir.parent))
        os.replace(run_dir, old / "run")  # swap first, delete after: a crash never loses both
        os.replace(tmp, run_dir)
        shutil.rmtree(old)
    else:
        os.replace(tmp, run_dir)


def _write_files(tmp: Path, config, records: list[dict]) -> None:
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
    write_marker(tmp, RUN_KIND)


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
    from das.adapters.loading import WeightsNotAvailableError
    from das.config_cli import CommandLineError, parse_config_argv, wants_help
    from das.rewards.optional import MissingExtraError

    argv = list(sys.argv if argv is None else argv)
    if wants_help(argv):
        print(HELP)
        return 0
    try:
        config, _ = parse_config_argv(argv, EXAMPLE, lock_config=True)
        run_dir = run(config)
    except (CommandLineError, ConfigError, RunDirError, WeightsNotAvailableError, MissingExtraError) as error:
        print(f"das: {' '.join(str(error).split())}", file=sys.stderr)
        return 2
    except OSError as error:
        print(f"das: {error.strerror or error} ({error.filename}); nothing was overwritten.", file=sys.stderr)
        return 1
    print(f"das: wrote {run_dir}")
    return 0
