"""Experiment trackers (``config.tracker``: ``tensorboard`` or ``wandb``) through accelerate.

The entry point builds the ``Accelerator`` with ``log_with=config.tracker`` and the run
directory as its ``project_dir``; the loop starts the trackers once that directory exists
(:func:`start_trackers`), so the logs live inside the run: ``<run_dir>/tensorboard/`` for
TensorBoard, ``<run_dir>/wandb/`` for wandb (set ``WANDB_MODE=offline`` to keep it local and
``wandb sync`` it later). A resumed run appends to the same place. Per complete round,
:func:`log_round` logs the scalars of ``metrics.jsonl`` (true and observed reward, diversity,
ESS, failures, queries, the previous surrogate's calibration on the round's answers) and a
grid of the round's queried images, all at step = round.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

TENSORBOARD_FOLDER = "tensorboard"
WANDB_PROJECT = "das-online"
GRID_MIN_PIXELS = 256  # small images are enlarged (nearest neighbour) until the grid is about this wide


def start_trackers(config, accelerator, run_dir: Path) -> None:
    """Starts the configured trackers on the main process, logging into `run_dir` (once)."""
    if not accelerator.log_with or accelerator.trackers:
        return
    accelerator.project_configuration.set_directories(str(run_dir))
    accelerator.project_configuration.logging_dir = str(run_dir)
    hyperparameters = {
        "method": config.method or config.surrogate.kind,
        "surrogate": config.surrogate.kind,
        "oracle": config.oracle.kind,
        "guidance": config.smc.guidance,
        "kl_coeff": float(config.smc.kl_coeff),
        "num_particles": int(config.smc.num_particles),
        "queries_per_round": int(config.loop.queries_per_round),
        "seed": int(config.seed),
    }
    project = TENSORBOARD_FOLDER if config.tracker == "tensorboard" else WANDB_PROJECT
    accelerator.init_trackers(
        project, config=hyperparameters, init_kwargs={"wandb": {"dir": str(run_dir), "name": Path(run_dir).name}}
    )


def round_scalars(row: dict) -> dict[str, float]:
    """The per-round scalars logged to trackers, from one ``metrics.jsonl`` row (finite values only)."""
    flat: dict[str, float] = {}
    for name in ("true_reward", "observed_reward"):
        for stat in ("mean", "max", "std"):
            flat[f"{name}/{stat}"] = (row.get(name) or {}).get(stat)
    for key in ("diversity", "failed_queries", "queries_total", "ess_fraction", "log_normalizer"):
        flat[key] = row.get(key)
    flat["surrogate/prediction_rmse"] = row.get("surrogate_prediction_rmse")
    for key, value in (row.get("calibration") or {}).items():
        flat[f"calibration/{key}"] = value
    return {
        key: float(value)
        for key, value in flat.items()
        if isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value)
    }


def image_grid_for_tracker(images: torch.Tensor) -> np.ndarray:
    """A round's queried images `(N, 3, H, W)` (uint8 or floats in [0, 1]) as one `(H', W', 3)` uint8 grid."""
    from das.images import image_grid

    pixels = images if images.dtype == torch.uint8 else (images.float().clamp(0, 1) * 255).round().to(torch.uint8)
    grid = image_grid(pixels.movedim(1, -1).cpu().numpy())
    scale = max(1, min(8, GRID_MIN_PIXELS // max(grid.shape[1], 1)))
    return np.ascontiguousarray(grid.repeat(scale, axis=0).repeat(scale, axis=1))


def log_round(accelerator, row: dict, images: torch.Tensor | None = None) -> None:
    """Logs one complete round's scalars and image grid to every started tracker (step = round)."""
    if not accelerator.log_with or not accelerator.trackers:
        return
    step = int(row["round"])
    accelerator.log(round_scalars(row), step=step)
    if images is None or images.shape[0] == 0:
        return
    grid = image_grid_for_tracker(images)
    for tracker in accelerator.trackers:
        if tracker.name == "tensorboard":
            tracker.log_images({"queried_images": grid[None]}, step=step, dataformats="NHWC")
        else:
            tracker.log_images({"queried_images": [grid]}, step=step)
