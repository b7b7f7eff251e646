"""Trackers: two loop rounds logged to TensorBoard (and wandb offline, where installed), read back."""

import math
import time
from pathlib import Path

import pytest

from online.online_main_smc import run
from online.run_directory import complete_rounds
from online.tracking import image_grid_for_tracker, round_scalars

SCALARS = ("true_reward/mean", "observed_reward/mean", "diversity", "ess_fraction", "queries_total")
CALIBRATION = ("calibration/coverage_95", "calibration/nll", "surrogate/prediction_rmse")


def _two_rounds(make_config, tracker: str):
    config = make_config()
    config.tracker = tracker
    config.loop.num_rounds = 2
    config.loop.initial_queries = 4
    config.loop.queries_per_round = 2
    assert run(config) == 0
    run_dir = Path(config.output_dir) / config.run_name
    assert complete_rounds(run_dir) == [0, 1]
    return run_dir


def test_tensorboard_gets_scalars_and_an_image_grid_per_round(make_config):
    pytest.importorskip("tensorboard", reason='pip install "das-toolkit[tracking]" to test the tensorboard tracker')
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir = _two_rounds(make_config, "tensorboard")
    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    tags = events.Tags()
    for tag in SCALARS:
        assert [e.step for e in events.Scalars(tag)] == [0, 1], tag
    for tag in CALIBRATION:  # the previous round's surrogate on this round's answers: from round 1 on
        assert [e.step for e in events.Scalars(tag)] == [1], tag
    assert all(math.isfinite(e.value) for tag in tags["scalars"] for e in events.Scalars(tag))
    queries = [e.value for e in events.Scalars("queries_total")]
    assert queries == [4, 6]
    grids = events.Images("queried_images")
    assert [g.step for g in grids] == [0, 1] and all(g.width >= 8 and g.height >= 8 for g in grids)


def test_wandb_offline_logs_the_same_rounds(make_config, monkeypatch):
    pytest.importorskip("wandb", reason='wandb is not installed (optional: pip install "das-toolkit[wandb]")')
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    run_dir = _two_rounds(make_config, "wandb")
    (offline,) = (run_dir / "wandb").glob("offline-run-*")  # inside the run directory, one run
    keys = SCALARS + CALIBRATION + ("queried_images",)
    deadline = time.monotonic() + 30  # wandb's service process may still be flushing the file
    while True:
        records = b"".join(path.read_bytes() for path in offline.glob("run-*.wandb"))
        missing = [key for key in keys if key.encode() not in records]
        if not missing or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert not missing, missing  # the history records name every logged key
    grids = sorted(
        path.name.split("_")[2] for path in (offline / "files" / "media" / "images").glob("queried_images_*")
    )
    assert grids == ["0", "1"]  # one image grid per round


def test_round_scalars_keep_finite_numbers_only():
    import torch

    row = {
        "round": 1,
        "true_reward": {"mean": 1.0, "max": 2.0, "std": float("nan")},
        "observed_reward": {"mean": 1.5},
        "diversity": 0.3,
        "failed_queries": 0,
        "queries_total": 6,
        "ess_fraction": None,
        "surrogate_prediction_rmse": 0.2,
        "calibration": {"coverage_95": 1.0, "spearman": None, "n": 2},
    }
    flat = round_scalars(row)
    assert flat == {
        "true_reward/mean": 1.0,
        "true_reward/max": 2.0,
        "observed_reward/mean": 1.5,
        "diversity": 0.3,
        "failed_queries": 0.0,
        "queries_total": 6.0,
        "surrogate/prediction_rmse": 0.2,
        "calibration/coverage_95": 1.0,
        "calibration/n": 2.0,
    }
    grid = image_grid_for_tracker(torch.zeros(5, 3, 8, 8, dtype=torch.uint8))
    assert grid.dtype.name == "uint8" and grid.shape[2] == 3 and grid.shape[1] >= 24 * 8  # 3 × 8 px, enlarged
