"""``python -m das`` writes beside the online loop's runs: its default ``output_dir`` is ``runs/das``."""

from __future__ import annotations

import importlib
from pathlib import PurePosixPath

import pytest

from config.online_base import online_config


@pytest.mark.parametrize("spec", ["sd:aesthetic", "sd:world", "sd:realign", "sdxl:jpeg", "lcm:pick"])
def test_das_writes_under_the_loops_runs_folder(spec):
    name, variant = spec.split(":")
    config = importlib.import_module(f"config.{name}").get_config(variant)
    loop_root = PurePosixPath(online_config("ucb", "tiny_jpeg", method="UCB", acquisition="ucb").output_dir)
    assert PurePosixPath(config.output_dir) == loop_root / "das"
