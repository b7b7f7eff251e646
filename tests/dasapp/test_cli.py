import json
import os
import subprocess
import sys

import pytest
from ml_collections import config_flags  # noqa: F401  (the CLI's config machinery)

from dasapp.config_checks import ConfigError
from dasapp.offline import run, validate
from tests import REPO_ROOT as ROOT
from tests.tiny_components import tiny_sd_pipeline


def load_config(spec: str):
    """``"config/sd.py:aesthetic"`` → that variant's config (``config`` is an installed package)."""
    import importlib

    path, variant = spec.split(":")
    return importlib.import_module("config." + path.removeprefix("config/").removesuffix(".py")).get_config(variant)


@pytest.fixture(scope="module")
def sd_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny_sd")
    tiny_sd_pipeline().save_pretrained(folder)
    return str(folder)


def tiny_config(sd_folder, out, variant="jpeg"):
    config = load_config(f"config/sd.py:{variant}")
    config.model.path = sd_folder
    config.model.dtype = "fp32"
    config.model.num_steps = 2
    config.device = "cpu"
    config.num_prompts = 3
    config.batch_prompts = 2
    config.smc.num_particles = 2
    config.output_dir = str(out)
    return config


def test_run_writes_outputs(sd_folder, tmp_path):
    config = tiny_config(sd_folder, tmp_path)
    run_dir = run(config)
    assert sorted(p.name for p in (run_dir / "images").iterdir()) == ["0000.png", "0001.png", "0002.png"]
    assert len(list((run_dir / "particles").iterdir())) == 6
    assert (run_dir / "grid.png").is_file()
    rewards = json.loads((run_dir / "rewards.json").read_text())
    assert len(rewards["per_prompt"]) == 3 and len(rewards["per_image"]) == 6
    assert [p["prompt"] for p in rewards["per_prompt"]] == ["camel", "bat", "owl"]
    traces = json.loads((run_dir / "traces.json").read_text())["per_prompt"]
    assert len(traces[0]["ess"]) == 3 and len(traces[0]["lam"]) == 3
    # never overwritten without overwrite=True
    with pytest.raises(ConfigError, match="overwrite=True"):
        run(config)
    config.overwrite = True
    run(config)


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("smc.num_particles", 0, "num_particles"),
        ("smc.ess_threshold", 1.5, "ess_threshold"),
        ("reward.name", "beauty", "choose one of"),
        ("model.family", "dalle", "model.family"),
        ("prompt_file", "no/such/file.txt", "prompt_file"),
    ],
)
def test_validation(sd_folder, tmp_path, field, value, message):
    config = tiny_config(sd_folder, tmp_path)
    section, _, name = field.rpartition(".")
    setattr(config[section] if section else config, name, value)
    with pytest.raises(ConfigError, match=message):
        validate(config)


def test_aesthetic_needs_mlp(sd_folder, tmp_path):
    config = tiny_config(sd_folder, tmp_path, "aesthetic")
    config.reward.kwargs.mlp_path = str(tmp_path / "nope.pth")
    with pytest.raises(ConfigError, match="mlp_path"):
        validate(config)


def _cli(*args):
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    return subprocess.run(
        [sys.executable, "-m", "das", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=240
    )


def test_cli_end_to_end_with_overrides(sd_folder, tmp_path):
    proc = _cli(
        "--config",
        "config/sd.py:jpeg",
        f"--config.model.path={sd_folder}",
        "--config.model.dtype=fp32",
        "--config.model.num_steps=2",
        "--config.device=cpu",
        "--config.num_prompts=2",
        "--config.smc.num_particles=2",
        f"--config.output_dir={tmp_path}",
        "--config.run_name=cli",
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "cli" / "grid.png").is_file() and (tmp_path / "cli" / "traces.json").is_file()


def test_cli_bad_config_one_line(tmp_path):
    proc = _cli("--config", "config/sd.py:jpeg", "--config.smc.num_particles=0", f"--config.output_dir={tmp_path}")
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.strip().splitlines() if line.startswith("das:")]
    assert len(lines) == 1 and "num_particles" in lines[0]
    assert "Traceback" not in proc.stderr


def test_cli_missing_model_offline(tmp_path):
    proc = _cli(
        "--config",
        "config/sd.py:jpeg",
        "--config.model.path=made-up-org/no-such-model",
        "--config.device=cpu",
        f"--config.output_dir={tmp_path}",
    )
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "made-up-org/no-such-model" in proc.stderr and "local folder" in proc.stderr


def test_overwrite_replaces_only_an_output_of_this_tool(sd_folder, tmp_path):
    config = tiny_config(sd_folder, tmp_path)
    config.overwrite = True
    mine = tmp_path / config.run_name
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    with pytest.raises(ConfigError, match="no run.json marker"):
        run(config)
    assert (mine / "notes.txt").read_text() == "keep"
    for name, message in [("", "run_name is empty"), ("../escape", "not a plain name"), ("a/b", "not a plain name")]:
        config.run_name = name
        with pytest.raises(ConfigError, match=message):
            run(config)
    assert sorted(p.name for p in tmp_path.iterdir()) == [mine.name]
