"""The ``realign`` section of the offline CLI (DeRaDiff), on tiny random pixel models."""

import json
import math
from pathlib import Path

import pytest

from dasapp.cli import main
from dasapp.config_checks import ConfigError
from dasapp.offline import run, validate
from dasapp.realign_sweep import parse_sweep
from tests import REPO_ROOT as ROOT
from tests.tiny_components import save_pixel_model


def _reject(constant):
    raise ValueError(f"non-standard JSON constant {constant}")


def load_config(variant: str):
    from config.sd import get_config

    return get_config(variant)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    base = tmp_path_factory.mktemp("realign_models")
    return save_pixel_model(base / "reference", seed=0), save_pixel_model(base / "aligned", seed=1)


def tiny_world_config(models, out, **realign):
    reference, aligned = models
    config = load_config("realign_world")
    config.model.path = reference
    config.model.num_steps = 2
    config.realign.aligned = aligned
    config.num_prompts = 2
    config.smc.num_particles = 2
    config.realign.samples_per_prompt = 2
    config.output_dir = str(out)
    for key, value in realign.items():
        setattr(config.realign, key, value)
    return config


def test_world_sweep_writes_picture_json_and_table(models, tmp_path):
    config = tiny_world_config(models, tmp_path, sweep="0,0.5,1,2")
    run_dir = run(config)
    assert (run_dir / "realign_sweep.png").stat().st_size > 0
    summary = json.loads((run_dir / "realign_sweep.json").read_text(), parse_constant=_reject)
    assert summary["per_lam"][0]["emulated_alpha"] is None  # λ = 0: α/λ = ∞, stored as null (strict JSON)
    assert [e["lam"] for e in summary["per_lam"]] == [0, 0.5, 1, 2]
    assert summary["per_lam"][1]["emulated_alpha"] == 10.0 and summary["per_lam"][1]["das"]["kl_coeff"] == 10.0
    for entry in summary["per_lam"]:
        for side in ("realigned", "das"):
            cell = entry[side]
            assert math.isfinite(cell["reward_mean"]) and cell["diversity"] >= 0 and cell["cross_reward_jpeg_kb"] > 0
    table = (run_dir / "realign_sweep.md").read_text().splitlines()
    assert len(table) == 2 + 4 and table[0].startswith("| λ |")
    from PIL import Image

    width, height = Image.open(run_dir / "realign_sweep.png").size
    assert width > height  # 8 columns (4 λ × realigned/DAS), 2 prompt rows


def test_realigned_sampling_writes_the_usual_run_directory(models, tmp_path):
    run_dir = run(tiny_world_config(models, tmp_path, lam=0.5))
    rewards = json.loads((run_dir / "rewards.json").read_text(), parse_constant=_reject)
    assert len(rewards["per_prompt"]) == 2 and len(rewards["per_image"]) == 4
    traces = json.loads((run_dir / "traces.json").read_text(), parse_constant=_reject)["per_prompt"]
    assert traces[0]["ess"] == [2.0] * 3 and traces[0]["log_normalizer"] == 0.0


def test_realign_smc_runs_das_on_the_reference_with_the_realigned_chain_as_proposal(models, tmp_path, monkeypatch):
    import das.smc

    built = []
    real = das.smc.DASSampler.__init__

    def spy(self, adapter, settings, proposal_adapter=None):
        built.append((adapter, proposal_adapter))
        real(self, adapter, settings, proposal_adapter)

    monkeypatch.setattr(das.smc.DASSampler, "__init__", spy)
    run_dir = run(tiny_world_config(models, tmp_path, lam=0.5, smc=True))
    ((adapter, proposal),) = built
    assert type(proposal).__name__ == "RealignedAdapter" and proposal.lam == 0.5 and proposal.reference is adapter
    traces = json.loads((run_dir / "traces.json").read_text(), parse_constant=_reject)["per_prompt"]
    assert traces[0]["lam"][-1] > 0  # tempered towards the reward: DAS, not plain sampling


@pytest.mark.parametrize("lam, message", [(-0.5, "at least 0"), (float("nan"), "finite")])
def test_bad_lambda_is_refused(models, tmp_path, lam, message):
    config = tiny_world_config(models, tmp_path, lam=lam)
    with pytest.raises(ConfigError, match=message):
        validate(config)


def test_bad_sweep_and_missing_alpha_are_refused(models, tmp_path):
    with pytest.raises(ConfigError, match="not one"):
        parse_sweep("0,half")
    with pytest.raises(ConfigError, match="at least 0"):
        parse_sweep("0,-1")
    config = tiny_world_config(models, tmp_path, sweep="0,1", alpha=0.0)
    with pytest.raises(ConfigError, match="realign.alpha"):
        validate(config)


def test_mismatched_models_are_refused_before_loading(models, tmp_path):
    other = save_pixel_model(tmp_path / "other", conditional=False)
    import json as _json

    config_path = Path(other) / "scheduler" / "scheduler_config.json"
    cfg = _json.loads(config_path.read_text())
    cfg["prediction_type"] = "v_prediction"
    config_path.write_text(_json.dumps(cfg))
    config = tiny_world_config(models, tmp_path / "out", aligned=other)
    with pytest.raises(ConfigError, match="does not match model.path"):
        validate(config)


@pytest.mark.parametrize(
    "override, message",
    [
        ("--config.realign.lam=-1", "realign.lam"),
        ("--config.realign.lam=nan", "finite"),
        ("--config.realign.aligned=no/such/folder", "does not exist"),
    ],
)
def test_cli_gives_one_line_and_exit_2(models, tmp_path, capsys, override, message):
    argv = [
        "das",
        "--config",
        str(ROOT / "config" / "sd.py") + ":realign_world",
        f"--config.model.path={models[0]}",
        f"--config.realign.aligned={models[1]}",
        f"--config.output_dir={tmp_path}",
        override,
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and err.startswith("das: ")
    assert not any(tmp_path.iterdir())


def test_sd_realign_variant_needs_an_aligned_folder(tmp_path, capsys):
    argv = ["das", "--config", str(ROOT / "config" / "sd.py") + ":realign", f"--config.output_dir={tmp_path}"]
    assert main(argv) == 2
    assert "realign.aligned is empty" in capsys.readouterr().err


@pytest.mark.parametrize("config_file", ["sdxl.py", "lcm.py"])
def test_world_variants_are_refused_for_other_model_families(config_file, capsys):
    assert main(["das", "--config", f"{ROOT / 'config' / config_file}:world"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "config/sd.py:world" in err[0]
