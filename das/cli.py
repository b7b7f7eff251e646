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

With ``realign.enabled`` (the ``realign`` variants), the model is DeRaDiff's realigned chain
of ``model.path`` and ``realign.aligned`` at ``realign.lam`` (docs/realign.md): plain samples
of it (``smc.num_particles`` per prompt), or, with ``realign.smc``, DAS towards
``p_ref · exp(r/smc.kl_coeff)`` with the realigned chain as its proposal (exact weights;
closest to the target with ``smc.kl_coeff = α/λ``). With
``realign.sweep`` (a λ list) the run directory holds ``realign_sweep.png`` (a column per λ),
``realign_sweep.json`` and ``realign_sweep.md`` instead: per λ the mean reward, diversity and
a cross-reward, beside DAS on ``model.path`` at the equivalent α/λ.

The configuration is validated before any model is loaded; errors a user can cause print
one line and exit non-zero.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

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
  config/sd.py     Stable Diffusion 1.5: aesthetic, pick, clip, multi, jpeg, realign;
                   world, realign_world (the embedded world's 32×32 model: CPU, no download)
  config/sdxl.py   SDXL (the same variants but world, realign_world)
  config/lcm.py    Latent Consistency Model (the same variants but world, realign_world)

Main fields (override with --config.<field>=<value>):
  run_name, output_dir, overwrite   the outputs go to <output_dir>/<run_name> (a plain name);
                                    overwrite replaces an earlier output of this tool there, nothing else
  prompt_file, num_prompts, batch_prompts, seed, device ('' automatic, 'cpu', 'cuda', 'cuda:N')
  model.path, model.dtype, model.num_steps, model.guidance_scale
  reward.name, reward.kwargs.*
  smc.kl_coeff (α), smc.num_particles, smc.resampling, smc.tempering, smc.tempering_gamma, smc.selection
  realign.aligned, realign.lam (λ), realign.alpha, realign.smc, realign.sweep ("0,0.5,1,2"), realign.samples_per_prompt
  (prompt_file "world": the embedded world's prompts; reward.name also "colorfulness")

Examples:
  python -m das --config config/sd.py:jpeg --config.num_prompts=4 --config.run_name=jpeg-test
  python -m das --config config/sd.py:realign --config.realign.aligned=PATH --config.realign.lam=0.5
  python -m das --config config/sd.py:realign_world --config.realign.sweep=0,0.5,1,2

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
    if realign_enabled(config):
        validate_realign(config)
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
    if config.prompt_file not in WORLD_PROMPTS and not _resolve(config.prompt_file).is_file():
        raise ConfigError(
            f"The prompt file {config.prompt_file!r} does not exist; set prompt_file to a text file with one prompt per line."
        )
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
            raise ConfigError(
                f"The run directory {str(run_dir)!r} already exists; choose another run_name or pass --config.overwrite=True."
            )
        check_removable(run_dir, output_dir, RUN_KIND)


def read_prompts(path: str, num: int = 0) -> list[str]:
    """Non-empty lines of `path` (``#`` comments skipped); the first `num` (0: all).

    ``"world"`` (or ``"world:train"``, ``"world:eval"``) is the embedded world's prompt list.
    """
    if path in WORLD_PROMPTS:
        from world import PROMPTS

        return list(PROMPTS)[:num] if num else list(PROMPTS)
    lines = [line.strip() for line in _resolve(path).read_text(encoding="utf-8").splitlines()]
    prompts = [line for line in lines if line and not line.startswith("#")]
    if not prompts:
        raise ConfigError(f"The prompt file {path!r} has no prompts; write one prompt per line.")
    return prompts[:num] if num else prompts


def make_cli_reward(config, device: str):
    """The configured reward (:func:`das.rewards.make_reward` by name), on `device`."""
    from das.rewards import make_reward

    reward_kwargs = config.reward.kwargs.to_dict()
    if reward_kwargs.get("mlp_path"):
        reward_kwargs["mlp_path"] = str(_resolve(reward_kwargs["mlp_path"]))
    reward = make_reward(config.reward.name, **reward_kwargs)
    if isinstance(reward, torch.nn.Module):
        reward.to(device)
    return reward


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
        chunk = list(prompts[start : start + batch])
        generator = torch.Generator(device=sampler.adapter.device).manual_seed(seed + offset + start)
        result = sampler.sample(chunk, generator)
        selected = result.selected_index
        for b, prompt in enumerate(chunk):
            records.append(
                {
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
                }
            )
    return records


def write_outputs(run_dir: Path, config, records: list[dict]) -> None:
    """Writes the run directory atomically (a temporary sibling renamed into place)."""
    records = sorted(records, key=lambda r: r["index"])
    write_run_directory(run_dir, lambda tmp: _write_files(tmp, config, records))


def write_run_directory(run_dir: Path, fill) -> None:
    """Calls ``fill(tmp)`` on a temporary sibling of `run_dir`, marks it, then swaps it into place.

    An earlier output there (validated before: one of this tool's, with overwrite=True) is
    renamed aside first and deleted last, so a crash never loses both.
    """
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{run_dir.name}.", suffix=".tmp", dir=run_dir.parent))
    try:
        fill(tmp)
        write_marker(tmp, RUN_KIND)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # the temporary folder is ours; the old outputs are untouched
        raise
    if run_dir.exists() or run_dir.is_symlink():
        check_removable(run_dir, run_dir.parent, RUN_KIND)
        old = Path(tempfile.mkdtemp(prefix=f".{run_dir.name}.old.", suffix=".tmp", dir=run_dir.parent))
        os.replace(run_dir, old / "run")  # swap first, delete after
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
            per_image.append(
                {
                    "prompt_index": i,
                    "prompt": r["prompt"],
                    "particle": k,
                    "file": name,
                    "reward": r["rewards"][k],
                    "weight": r["weights"][k],
                }
            )
        sel = r["selected_index"] if isinstance(r["selected_index"], int) else int(np.argmax(r["weights"]))
        image = r["selected"] if r["selected"] is not None else r["particles"][sel]
        save_png(image, tmp / f"images/{i:04d}.png")
        chosen.append(image)
        per_prompt.append(
            {
                "prompt_index": i,
                "prompt": r["prompt"],
                "file": f"images/{i:04d}.png",
                "selected_particle": sel,
                "selected_reward": r["rewards"][sel],
                "mean_reward": float(np.mean(r["rewards"])),
                "weighted_reward": float(np.dot(r["weights"], r["rewards"])),
                "max_reward": max(r["rewards"]),
            }
        )
        traces.append(
            {
                "prompt_index": i,
                "prompt": r["prompt"],
                "ess": r["ess"],
                "lam": r["lam"],
                "resampled": r["resampled"],
                "reward_trace": r["reward_trace"],
                "log_normalizer": r["log_normalizer"],
            }
        )
    summary = {
        "num_prompts": len(per_prompt),
        "mean_selected_reward": float(np.mean([p["selected_reward"] for p in per_prompt])),
    }
    (tmp / "rewards.json").write_text(
        json.dumps({"summary": summary, "per_prompt": per_prompt, "per_image": per_image}, indent=1)
    )
    (tmp / "traces.json").write_text(json.dumps({"num_particles": config.smc.num_particles, "per_prompt": traces}))
    (tmp / "config.json").write_text(config.to_json_best_effort(indent=1))
    save_png(image_grid(np.stack(chosen)), tmp / "grid.png")


def run(config) -> Path:
    """Validates `config`, samples every prompt with DAS, writes the run directory; returns it."""
    from accelerate import PartialState
    from accelerate.utils import gather_object

    validate(config)
    prompts = read_prompts(config.prompt_file, config.num_prompts)
    state = PartialState(cpu=config.device == "cpu")
    device = config.device or str(state.device)
    torch.manual_seed(config.seed)

    reward = make_cli_reward(config, device)
    if realign_enabled(config):
        reference, aligned = build_realign_pair(config, device)
        if config.realign.sweep:
            run_dir = Path(config.output_dir) / config.run_name
            if state.is_main_process:
                run_sweep(config, reference, aligned, reward, prompts, run_dir)
            state.wait_for_everyone()
            return run_dir
        from das.adapters.realigned import RealignedAdapter

        adapter = RealignedAdapter(reference, aligned, config.realign.lam)
        if config.realign.smc:  # DAS towards p_ref·exp(r/smc.kl_coeff), the realigned chain as its proposal
            sampler = make_das(reference, reward, config.smc, state.is_main_process, proposal_adapter=adapter)
        else:
            sampler = PlainSampler(adapter, reward, config.smc.num_particles)
    else:
        sampler = make_das(build_adapter(config.model, device), reward, config.smc, state.is_main_process)
    indexed = list(range(len(prompts)))
    with state.split_between_processes(indexed) as local:
        local = list(local)
        records = (
            sample_prompts(
                sampler, [prompts[i] for i in local], config.batch_prompts, config.seed, local[0] if local else 0
            )
            if local
            else []
        )
    records = gather_object(records) if state.num_processes > 1 else records
    run_dir = Path(config.output_dir) / config.run_name
    if state.is_main_process:
        write_outputs(run_dir, config, records)
    state.wait_for_everyone()
    return run_dir


def make_das(adapter, reward, smc, progress: bool = False, **overrides):
    """A :class:`~das.smc.DASSampler` with the ``config.smc`` settings (`overrides` win)."""
    from das.smc import DASSampler

    kwargs = {
        "kl_coeff": smc.kl_coeff,
        "num_particles": smc.num_particles,
        "resampling": smc.resampling,
        "ess_threshold": smc.ess_threshold,
        "tempering": smc.tempering,
        "tempering_gamma": smc.tempering_gamma,
        "selection": smc.selection,
        "max_chunk_rows": smc.max_chunk_rows or None,
        "progress": progress,
    }
    kwargs.update(overrides)
    return DASSampler(adapter, reward, **kwargs)


# ---------------------------------------------------------------------------------------------
# DeRaDiff realignment (docs/realign.md): the realign.* section.

WORLD_PROMPTS = ("world", "world:train", "world:eval")


# Scheduler fields that must agree for two models to be mixed step by step (the full check
# runs on the loaded adapters, das.adapters.realigned.check_realignable).
_SCHEDULER_KEYS = (
    "_class_name",
    "num_train_timesteps",
    "beta_schedule",
    "beta_start",
    "beta_end",
    "prediction_type",
    "trained_betas",
    "clip_sample",
    "thresholding",
    "set_alpha_to_one",
    "timestep_spacing",
    "steps_offset",
)
_UNET_KEYS = ("_class_name", "in_channels", "out_channels", "sample_size")


def realign_enabled(config) -> bool:
    return "realign" in config and bool(config.realign.enabled)


def parse_sweep(text) -> list[float]:
    """``"0,0.5,1,2"`` -> ``[0.0, 0.5, 1.0, 2.0]``; raises :class:`ConfigError` for anything else."""
    if not isinstance(text, str):
        raise ConfigError(
            f'realign.sweep must be a comma-separated list of λ values such as "0,0.5,1,2", got {text!r}.'
        )
    if not text.strip():
        return []
    values = []
    for item in text.split(","):
        try:
            value = float(item)
        except ValueError:
            raise ConfigError(
                f'realign.sweep must be comma-separated numbers such as "0,0.5,1,2"; {item.strip()!r} is not one.'
            ) from None
        check_number(value, "every λ of realign.sweep", minimum=0)
        values.append(value)
    return values


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def aligned_alpha(config) -> float:
    """``realign.alpha``, or the aligned folder's ``training_info.json`` ``alpha`` when it is 0; 0 if unknown."""
    if config.realign.alpha:
        return float(config.realign.alpha)
    value = _read_json(_resolve(config.realign.aligned) / "training_info.json").get("alpha", 0.0)
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) and value > 0 else 0.0


def validate_realign(config) -> None:
    """Checks ``config.realign`` without loading a model; raises :class:`ConfigError`."""
    realign = config.realign
    check_flag(realign.smc, "realign.smc")
    check_flag(realign.sweep_das, "realign.sweep_das")
    check_number(realign.lam, "realign.lam (λ)", minimum=0)
    check_number(realign.alpha, "realign.alpha (0: from the aligned model's training_info.json)", minimum=0)
    check_number(realign.samples_per_prompt, "realign.samples_per_prompt", integer=True, minimum=1, maximum=4096)
    parse_sweep(realign.sweep)
    aligned = realign.aligned
    if not isinstance(aligned, str) or not aligned.strip():
        raise ConfigError(
            "realign.aligned is empty; set --config.realign.aligned=PATH to the folder of a model aligned from model.path."
        )
    folder = _resolve(aligned)
    if not folder.is_dir():
        raise ConfigError(
            f"The aligned model folder {aligned!r} does not exist; set --config.realign.aligned to a local folder "
            f"of a model aligned from model.path (e.g. checkpoints/aligned/shapes32-colorfulness for the world)."
        )
    if not (folder / "unet").is_dir():
        raise ConfigError(
            f"The aligned model folder {aligned!r} has no unet/ subfolder; point realign.aligned at a model "
            f"folder in the layout of model.path."
        )
    reference = _resolve(config.model.path)
    if reference.is_dir():  # a hub id is compared after loading (check_realignable)
        for sub, name, keys in (
            ("scheduler", "scheduler_config.json", _SCHEDULER_KEYS),
            ("unet", "config.json", _UNET_KEYS),
        ):
            ref_cfg, al_cfg = _read_json(reference / sub / name), _read_json(folder / sub / name)
            diffs = [key for key in keys if ref_cfg.get(key) != al_cfg.get(key)]
            if ref_cfg and al_cfg and diffs:
                shown = "; ".join(f"{k} {ref_cfg.get(k)!r} vs {al_cfg.get(k)!r}" for k in diffs)
                raise ConfigError(
                    f"The aligned model {aligned!r} does not match model.path {config.model.path!r} ({sub}: {shown}); "
                    f"realignment needs a fine-tune of the same model."
                )
    if realign.sweep and realign.sweep_das and not aligned_alpha(config):
        raise ConfigError(
            "The sweep's DAS comparison needs the α the model was aligned at; set --config.realign.alpha "
            "or --config.realign.sweep_das=False."
        )


def build_realign_pair(config, device: str):
    """The reference (``model.path``) and aligned (``realign.aligned``) adapters, checked to be mixable."""
    from das.adapters.realigned import check_realignable

    reference = build_adapter(config.model, device)
    aligned_model = config.model.copy_and_resolve_references()
    aligned_model.path = str(_resolve(config.realign.aligned))
    aligned = build_adapter(aligned_model, device)
    try:
        check_realignable(reference, aligned)
    except (TypeError, ValueError) as error:
        raise ConfigError(str(error)) from None
    return reference, aligned


class PlainSampler:
    """K independent samples per prompt of an adapter's chain, returned as an ``SMCResult`` with uniform weights.

    The realigned chain *is* the approximate target, so it is sampled without SMC; the
    result has DAS's shape so that the run directory is written the same way: particle 0 is
    the selected sample, weights are uniform, ESS is K, λ is 0 and the log-normalizer 0 (no
    tilt), and the reward trace holds the final mean reward (nothing is traced).
    """

    def __init__(self, adapter, reward, num_particles: int):
        self.adapter = adapter
        self.reward = reward
        self.num_particles = int(num_particles)

    @torch.no_grad()
    def sample(self, prompts: Sequence[str], generator: torch.Generator):
        from das.smc import SMCResult

        adapter, k, b = self.adapter, self.num_particles, len(prompts)
        rows = [p for p in prompts for _ in range(k)]
        cond = adapter.encode_prompts(rows)
        x = adapter.initial_noise(b * k, generator)
        for step in range(adapter.num_steps):
            tr = adapter.transition(x, step, cond)
            x = tr.mean + tr.std * torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        images = adapter.decode(x).float()
        rewards = self.reward(images, rows).float().reshape(b, k).cpu()
        images = images.reshape(b, k, *images.shape[1:]).cpu()
        t = adapter.num_steps
        return SMCResult(
            samples=x.reshape(b, k, *x.shape[1:]).cpu(),
            images=images,
            rewards=rewards,
            log_weights=torch.full((b, k), -math.log(k)),
            log_normalizer=torch.zeros(b),
            ess=torch.full((t + 1, b), float(k)),
            lam=torch.zeros(t + 1, b),
            resampled=torch.zeros(t, b, dtype=torch.bool),
            reward_trace=rewards.mean(1).expand(t + 1, b).clone(),
            degenerate_steps=torch.zeros(b, dtype=torch.long),
            selected_index=torch.zeros(b, dtype=torch.long),
            selected=images[:, 0],
        )


def sweep_metrics(images: torch.Tensor, prompts: Sequence[str], reward, reward_name: str) -> dict:
    """Per-sweep-cell metrics of `images` `(P, M, 3, H, W)`: the reward, diversity (world features) and a cross-reward."""
    from das.features import mean_cosine_distance
    from das.rewards.colorfulness import ColorfulnessReward
    from das.rewards.jpeg import JPEGCompressibility
    from world.featurizer import WorldFeaturizer

    p, m = images.shape[:2]
    flat = images.reshape(p * m, *images.shape[2:]).float().clamp(0, 1)
    rows = [q for q in prompts for _ in range(m)]
    with torch.no_grad():
        values = reward(flat, rows).float().cpu()
        features = WorldFeaturizer()(flat.cpu())
    per_prompt_div = [mean_cosine_distance(features[i * m : (i + 1) * m]) for i in range(p)]
    out = {
        "reward_mean": float(values.mean()),
        "reward_std": float(values.std(unbiased=False)),
        "diversity": float(np.mean(per_prompt_div)),
    }
    if reward_name == "jpeg":
        out["cross_reward_colorfulness"] = float(ColorfulnessReward()(flat).mean())
    else:
        out["cross_reward_jpeg_kb"] = float((-JPEGCompressibility(95)(flat)).mean())
    return out


def _labelled_grid(columns: list[tuple[str, np.ndarray]], scale: int) -> np.ndarray:
    """Columns of `(R, H, W, 3)` uint8 tiles side by side, each under a text header."""
    from PIL import Image, ImageDraw

    r, h, w, _ = columns[0][1].shape
    head, pad = 14, 2
    tile_w, tile_h = w * scale, h * scale
    canvas = Image.new("RGB", (len(columns) * (tile_w + pad) + pad, head + r * (tile_h + pad) + pad), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for c, (label, tiles) in enumerate(columns):
        x = pad + c * (tile_w + pad)
        draw.text((x + 1, 1), label, fill=(0, 0, 0))
        for i, tile in enumerate(tiles):
            image = Image.fromarray(tile).resize((tile_w, tile_h), Image.NEAREST)
            canvas.paste(image, (x, head + pad + i * (tile_h + pad)))
    return np.asarray(canvas)


def run_sweep(config, reference, aligned, reward, prompts: Sequence[str], run_dir: Path) -> dict:
    """The λ sweep: realigned samples per λ (and DAS at α/λ), metrics, picture and table, written atomically."""
    import time

    from das.adapters.realigned import RealignedAdapter

    lams = parse_sweep(config.realign.sweep)
    m = config.realign.samples_per_prompt
    alpha = aligned_alpha(config)
    rows = [p for p in prompts for _ in range(m)]  # each prompt m times: m independent samples (DAS: m SMC runs)
    results, pictures = [], []
    for lam in lams:
        entry = {
            "lam": lam,
            "emulated_alpha": alpha / lam if alpha and lam > 0 else None,
        }  # None: ∞ (λ = 0) or α unknown
        start = time.time()
        plain = PlainSampler(RealignedAdapter(reference, aligned, lam), reward, 1)
        images = plain.sample(rows, torch.Generator(device=reference.device).manual_seed(config.seed)).images[:, 0]
        images = images.reshape(len(prompts), m, *images.shape[1:])
        entry["realigned"] = {
            **sweep_metrics(images, prompts, reward, config.reward.name),
            "seconds": time.time() - start,
        }
        pictures.append((f"realign {lam:g}", to_uint8(images[:, 0])))
        if config.realign.sweep_das and alpha:
            start = time.time()
            if lam > 0:
                das = make_das(reference, reward, config.smc, kl_coeff=alpha / lam, selection="sample")
                das_images = das.sample(
                    rows, torch.Generator(device=reference.device).manual_seed(config.seed)
                ).selected
                das_images = das_images.detach().float().cpu().reshape(len(prompts), m, *das_images.shape[1:])
                entry["das"] = {
                    **sweep_metrics(das_images, prompts, reward, config.reward.name),
                    "kl_coeff": alpha / lam,
                    "num_particles": config.smc.num_particles,
                    "seconds": time.time() - start,
                }
            else:  # α/0 = ∞: DAS's target is the reference model itself, sampled above
                das_images = images
                entry["das"] = {
                    **entry["realigned"],
                    "kl_coeff": None,
                    "note": "λ = 0: α = ∞, the reference (same samples)",
                }
            pictures.append((f"DAS a={alpha / lam:.3g}" if lam > 0 else "DAS a=inf", to_uint8(das_images[:, 0])))
        results.append(entry)
    summary = {
        "reference": config.model.path,
        "aligned": config.realign.aligned,
        "aligned_alpha": alpha or None,
        "reward": config.reward.name,
        "prompts": list(prompts),
        "samples_per_prompt": m,
        "seed": config.seed,
        "num_steps": config.model.num_steps,
        "guidance_scale": config.model.guidance_scale,
        "das": {
            "num_particles": config.smc.num_particles,
            "selection": "sample",
            "tempering": config.smc.tempering,
            "tempering_gamma": config.smc.tempering_gamma,
        }
        if config.realign.sweep_das and alpha
        else None,
        "diversity": "mean over prompts of the mean pairwise cosine distance of WorldFeaturizer features of its samples",
        "picture": "realign_sweep.png: rows = prompts (first sample of each), a column per λ (realigned, then DAS at α/λ)",
        "per_lam": results,
    }
    _write_sweep(run_dir, config, summary, _labelled_grid(pictures, 2 if pictures[0][1].shape[1] < 128 else 1))
    return summary


def sweep_table(summary: dict) -> str:
    """The sweep as a Markdown table."""
    cross = "cross_reward_jpeg_kb" if summary["reward"] != "jpeg" else "cross_reward_colorfulness"
    cross_name = "JPEG kB" if cross.endswith("kb") else "colourfulness"
    header = (
        f"| λ | emulated α | {summary['reward']} (realigned) | diversity | {cross_name} | {summary['reward']} (DAS at α/λ) "
        f"| diversity | {cross_name} |"
    )
    lines = [header, "|---|---|---|---|---|---|---|---|"]
    for e in summary["per_lam"]:
        a = e["emulated_alpha"]
        shown_alpha = f"{a:.3g}" if a is not None else ("∞" if e["lam"] == 0 and summary["aligned_alpha"] else "—")
        r, d = e["realigned"], e.get("das")
        cells = [f"{e['lam']:g}", shown_alpha, f"{r['reward_mean']:.2f}", f"{r['diversity']:.4f}", f"{r[cross]:.3f}"]
        cells += [f"{d['reward_mean']:.2f}", f"{d['diversity']:.4f}", f"{d[cross]:.3f}"] if d else ["—"] * 3
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _write_sweep(run_dir: Path, config, summary: dict, picture: np.ndarray) -> None:
    def fill(tmp: Path) -> None:
        save_png(picture, tmp / "realign_sweep.png")
        (tmp / "realign_sweep.json").write_text(json.dumps(summary, indent=1, default=str, allow_nan=False))
        (tmp / "realign_sweep.md").write_text(sweep_table(summary))
        (tmp / "config.json").write_text(config.to_json_best_effort(indent=1))

    write_run_directory(run_dir, fill)


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
