"""DeRaDiff realignment (docs/realign.md): the ``realign.*`` section of ``python -m das``.

The realigned chain of ``model.path`` (the reference) and ``realign.aligned`` at strength λ,
``ε_λ = (1 − λ)ε_ref + λε_aligned``, emulates alignment at α/λ. This module checks the
section without loading a model (:func:`validate_realign`), builds the pair of adapters
(:func:`build_realign_pair`), samples the chain without SMC (:class:`PlainSampler`) and runs
the λ sweep (:func:`run_sweep`): per λ the mean reward, diversity and a cross-reward, beside
DAS on ``model.path`` at the equivalent α/λ, written as ``realign_sweep.{png,json,md}``.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from das.ancestral import sample_chain
from das.images import labelled_grid, save_png, to_uint8
from dasapp.config_checks import ConfigError, check_flag, check_number
from dasapp.factory import build_adapter, make_das, resolve_path
from dasapp.run_dirs import DAS_SAMPLE_KIND, write_run_directory

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
    value = _read_json(resolve_path(config.realign.aligned) / "training_info.json").get("alpha", 0.0)
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
            "realign.aligned is empty; set --config.realign.aligned=PATH to the folder of a model aligned "
            "from model.path."
        )
    folder = resolve_path(aligned)
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
    reference = resolve_path(config.model.path)
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
    aligned_model.path = str(resolve_path(config.realign.aligned))
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

    def __init__(self, adapter, num_particles: int):
        self.adapter = adapter
        self.num_particles = int(num_particles)

    @torch.no_grad()
    def sample(self, prompts: Sequence[str], reward, generator: torch.Generator):
        """`K` samples of each of the ``B`` `prompts`, scored by `reward`, as a :class:`~das.smc.SMCResult`."""
        from das.smc import SMCResult, SMCTrace

        adapter, k, b = self.adapter, self.num_particles, len(prompts)
        rows = [p for p in prompts for _ in range(k)]
        x = sample_chain(adapter, rows, generator)
        images = adapter.decode(x).float()
        rewards = reward(images, rows).float().reshape(b, k).cpu()
        images = images.reshape(b, k, *images.shape[1:]).cpu()
        t = adapter.num_steps
        return SMCResult(
            samples=x.reshape(b, k, *x.shape[1:]).cpu(),
            images=images,
            rewards=rewards,
            log_weights=torch.full((b, k), -math.log(k)),
            log_normalizer=torch.zeros(b),
            trace=SMCTrace(
                ess=torch.full((t + 1, b), float(k)),
                lam=torch.zeros(t + 1, b),
                resampled=torch.zeros(t, b, dtype=torch.bool),
                reward=rewards.mean(1).expand(t + 1, b).clone(),
                degenerate_steps=torch.zeros(b, dtype=torch.long),
            ),
            selected_index=torch.zeros(b, dtype=torch.long),
            selected=images[:, 0],
        )


def sweep_metrics(images: torch.Tensor, prompts: Sequence[str], reward, reward_name: str) -> dict:
    """Per-sweep-cell metrics of `images` `(P, M, 3, H, W)`: the reward, diversity (world features), a cross-reward."""
    from das.features import mean_cosine_distance
    from das.rewards.colorfulness import ColorfulnessReward
    from das.rewards.jpeg import JPEGCompressibility

    # Plug-in point: diversity is measured with the embedded example world's featurizer (world
    # depends on das); the import is lazy so that das imports nothing from world at import time.
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


def run_sweep(config, reference, aligned, reward, prompts: Sequence[str], run_dir: Path) -> dict:
    """The λ sweep: realigned samples per λ (and DAS at α/λ), metrics, picture and table, written atomically."""
    alpha = aligned_alpha(config)
    with_das = bool(config.realign.sweep_das and alpha)
    results, pictures = [], []
    for lam in parse_sweep(config.realign.sweep):
        entry, columns = _sweep_cell(config, reference, aligned, reward, prompts, lam, alpha if with_das else 0.0)
        results.append(entry)
        pictures += columns
    summary = _sweep_summary(config, prompts, alpha, with_das, results)
    _write_sweep(run_dir, config, summary, labelled_grid(pictures, 2 if pictures[0][1].shape[1] < 128 else 1))
    return summary


def _sweep_cell(config, reference, aligned, reward, prompts, lam: float, das_alpha: float):
    """One λ of the sweep: its entry and its picture columns; DAS at α/λ too when `das_alpha` (α) is known."""
    from das.adapters.realigned import RealignedAdapter

    m = config.realign.samples_per_prompt
    rows = [p for p in prompts for _ in range(m)]  # each prompt m times: m independent samples (DAS: m SMC runs)
    alpha = aligned_alpha(config)
    entry = {"lam": lam, "emulated_alpha": alpha / lam if alpha and lam > 0 else None}  # None: ∞ (λ = 0) or α unknown
    start = time.time()
    plain = PlainSampler(RealignedAdapter(reference, aligned, lam), 1)
    generator = torch.Generator(device=reference.device).manual_seed(config.seed)
    images = plain.sample(rows, reward, generator).images[:, 0]
    images = images.reshape(len(prompts), m, *images.shape[1:])
    entry["realigned"] = {
        **sweep_metrics(images, prompts, reward, config.reward.name),
        "seconds": time.time() - start,
    }
    columns = [(f"realign {lam:g}", to_uint8(images[:, 0]))]
    if not das_alpha:
        return entry, columns
    start = time.time()
    if lam > 0:
        das = make_das(reference, config.smc, kl_coeff=das_alpha / lam, selection="sample")
        generator = torch.Generator(device=reference.device).manual_seed(config.seed)
        das_images = das.sample(rows, reward, generator).selected
        das_images = das_images.detach().float().cpu().reshape(len(prompts), m, *das_images.shape[1:])
        entry["das"] = {
            **sweep_metrics(das_images, prompts, reward, config.reward.name),
            "kl_coeff": das_alpha / lam,
            "num_particles": config.smc.num_particles,
            "seconds": time.time() - start,
        }
    else:  # α/0 = ∞: DAS's target is the reference model itself, sampled above
        das_images = images
        entry["das"] = {**entry["realigned"], "kl_coeff": None, "note": "λ = 0: α = ∞, the reference (same samples)"}
    columns.append((f"DAS a={das_alpha / lam:.3g}" if lam > 0 else "DAS a=inf", to_uint8(das_images[:, 0])))
    return entry, columns


def _sweep_summary(config, prompts, alpha: float, with_das: bool, results: list[dict]) -> dict:
    """What ``realign_sweep.json`` holds: the settings, then one entry per λ."""
    das = {
        "num_particles": config.smc.num_particles,
        "selection": "sample",
        "tempering": config.smc.tempering,
        "tempering_gamma": config.smc.tempering_gamma,
    }
    return {
        "reference": config.model.path,
        "aligned": config.realign.aligned,
        "aligned_alpha": alpha or None,
        "reward": config.reward.name,
        "prompts": list(prompts),
        "samples_per_prompt": config.realign.samples_per_prompt,
        "seed": config.seed,
        "num_steps": config.model.num_steps,
        "guidance_scale": config.model.guidance_scale,
        "das": das if with_das else None,
        "diversity": (
            "mean over prompts of the mean pairwise cosine distance of WorldFeaturizer features of its samples"
        ),
        "picture": (
            "realign_sweep.png: rows = prompts (first sample of each), a column per λ (realigned, then DAS at α/λ)"
        ),
        "per_lam": results,
    }


def sweep_table(summary: dict) -> str:
    """The sweep as a Markdown table."""
    cross = "cross_reward_jpeg_kb" if summary["reward"] != "jpeg" else "cross_reward_colorfulness"
    cross_name = "JPEG kB" if cross.endswith("kb") else "colourfulness"
    header = (
        f"| λ | emulated α | {summary['reward']} (realigned) | diversity | {cross_name} "
        f"| {summary['reward']} (DAS at α/λ) | diversity | {cross_name} |"
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

    write_run_directory(run_dir, fill, DAS_SAMPLE_KIND, overwrite=bool(config.overwrite))
