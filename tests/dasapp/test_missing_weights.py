"""Missing pretrained weights, on a machine without network: both tools list every missing item in one
line (its config field and a command that fetches it), exit 2 within seconds, and create nothing.

Runs the real entry points (``python -m das``'s :func:`dasapp.cli.main` and the online loop's
``main``) with an empty Hugging Face cache.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from dasapp.cli import main as das_main
from dasapp.config_checks import ConfigError
from dasapp.config_cli import parse_config_argv
from dasapp.weights import check_weights
from online.online_main_smc import main as loop_main
from tests.online.online_helpers import REPO

SD_ID = "stable-diffusion-v1-5/stable-diffusion-v1-5"
CLIP_ID = "openai/clip-vit-large-patch14"
TOOLS = {
    "das": (das_main, "config/sd.py:aesthetic", ("model.path", "reward.kwargs.clip_model", "reward.kwargs.mlp_path")),
    "loop": (
        loop_main,
        "config/UCB_smc.py:aesthetic",
        ("model.path", "featurizer.path", "oracle.clip_model", "oracle.mlp_path"),
    ),
}


@pytest.fixture(autouse=True)
def empty_hub_cache(tmp_path, monkeypatch):
    """An empty Hugging Face cache, offline: nothing may be fetched."""
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return tmp_path / "hf" / "hub"


def cache_model(cache: Path, repo_id: str, filename: str) -> None:
    """Puts `filename` of hub model `repo_id` in the cache layout huggingface_hub reads."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    commit = "0" * 40
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "snapshots" / commit).mkdir(parents=True)
    (repo / "snapshots" / commit / filename).write_text("{}")


def run_tool(tool: str, tmp_path: Path, *overrides: str) -> tuple[int, float]:
    entry, config, _ = TOOLS[tool]
    argv = [tool, "--config", str(REPO / config), f"--config.output_dir={tmp_path / 'out'}", *overrides]
    start = time.monotonic()
    status = entry(argv)
    return status, time.monotonic() - start


@pytest.mark.parametrize("tool", sorted(TOOLS))
def test_sd_aesthetic_lists_every_missing_weight_at_once(tool, tmp_path, capsys):
    status, seconds = run_tool(tool, tmp_path)
    err = capsys.readouterr().err
    assert status == 2 and seconds < 5
    assert len(err.strip().splitlines()) == 1
    for field in TOOLS[tool][2]:
        assert f"{field}=" in err and f"--config.{field}=" in err
    assert f"{len(TOOLS[tool][2])} pretrained weight(s)" in err
    assert f"download {SD_ID}" in err and f"download {CLIP_ID}" in err and "huggingface-cli" not in err
    assert "improved-aesthetic-predictor" in err
    assert not (tmp_path / "out").exists()


def load_config(config: str, *overrides: str):
    """`config` (``file.py:variant``) with `overrides`, parsed as the tools parse their command line."""
    return parse_config_argv(["tool", "--config", str(REPO / config), *overrides], config)[0]


@pytest.mark.parametrize("tool", sorted(TOOLS))
def test_local_folder_file_and_cached_hub_id_pass(tool, tmp_path, empty_hub_cache):
    model, head = tmp_path / "sd15", tmp_path / "head.pth"
    model.mkdir()
    head.write_bytes(b"weights")
    prefix = "reward.kwargs" if tool == "das" else "oracle"
    config = load_config(TOOLS[tool][1], f"--config.model.path={model}", f"--config.{prefix}.mlp_path={head}")
    with pytest.raises(ConfigError, match="clip_model="):  # the CLIP model is not cached yet
        check_weights(config)
    cache_model(empty_hub_cache, CLIP_ID, "config.json")
    check_weights(config)  # the folder, the file and the cached hub id: nothing missing


@pytest.mark.parametrize("tool", sorted(TOOLS))
def test_only_the_missing_items_are_listed(tool, tmp_path, capsys):
    model = tmp_path / "sd15"
    model.mkdir()
    status, _ = run_tool(tool, tmp_path, f"--config.model.path={model}")
    err = capsys.readouterr().err
    fields = TOOLS[tool][2][1:]
    assert status == 2 and f"{len(fields)} pretrained weight(s)" in err and "model.path=" not in err
    assert all(f"{field}=" in err for field in fields)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "config",
    ["config/sd.py:world", "config/sd.py:realign_world", "config/UCB_smc.py:tiny_jpeg", "config/GP_smc.py:tiny_rare"],
)
def test_world_configs_pass(config):
    check_weights(load_config(config))  # the shipped world model, no hub model: nothing to fetch
