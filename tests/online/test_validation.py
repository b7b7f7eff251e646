"""Bad input ends in one clear line and a non-zero exit before any model is loaded."""

import subprocess
import sys

import pytest

from online.validation import ConfigError, validate
from tests import REPO_ROOT as REPO


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("oracle.kind", "telepathy", "oracle.kind"),
        ("surrogate.kind", "crystal_ball", "surrogate.kind"),
        ("smc.num_particles", 0, "num_particles"),
        ("smc.ess_threshold", 1.5, "ess_threshold"),
        ("smc.kl_coeff", 0.0, "kl_coeff"),
        ("smc.resampling", "lottery", "smc.resampling"),
        ("loop.images_per_prompt", 3, "exceeds smc.num_particles"),
        ("loop.queries_per_round", 0, "queries_per_round"),
        ("model.family", "dalle", "model.family"),
        ("model.path", "/nonexistent/model", "does not exist"),
        ("prompts.train_file", "/nonexistent/prompts.txt", "prompt file"),
        ("oracle.kind", "external", "oracle.command"),
        ("tracker", "mlflow", "tracker"),
    ],
)
def test_bad_fields_are_named(make_config, field, value, message):
    config = make_config()
    section, _, name = field.rpartition(".")
    target = config[section] if section else config
    target[name] = value
    with pytest.raises(ConfigError, match=message):
        validate(config)


def test_an_existing_run_directory_is_never_overwritten_unless_asked(make_config, tmp_path):
    config = make_config()
    run_dir = tmp_path / "runs" / "run"
    run_dir.mkdir(parents=True)
    (run_dir / "precious.txt").write_text("paid for")
    with pytest.raises(ConfigError, match="already exists"):
        validate(config)
    config.overwrite = True
    with pytest.raises(ConfigError, match="no run.json marker"):
        validate(config)  # not a run of this tool: overwrite may not touch it
    (run_dir / "run.json").write_text('{"tool": "das-toolkit", "kind": "online-train"}')
    validate(config)
    assert (run_dir / "precious.txt").read_text() == "paid for"  # validation deletes nothing


def test_evaluate_needs_a_compatible_checkpoint(make_config, tmp_path):
    import torch

    from surrogate import make_surrogate

    config = make_config("tiny_evaluate")
    config.reward_model_path = str(tmp_path / "missing")
    with pytest.raises(ConfigError, match="No surrogate checkpoint"):
        validate(config)
    wrong = make_surrogate("ucb", input_dim=5, hidden=(8, 4), max_epochs=2)
    wrong.fit(torch.randn(20, 5), torch.randn(20), seed=0)
    wrong.save(tmp_path / "wrong.safetensors")
    config.reward_model_path = str(tmp_path / "wrong.safetensors")
    with pytest.raises(ConfigError, match="128-d features were expected"):
        validate(config)
    (tmp_path / "pickle.safetensors").write_bytes(b"\x80\x04K\x01.")
    config.reward_model_path = str(tmp_path / "pickle.safetensors")
    with pytest.raises(ConfigError):
        validate(config)


def test_the_entry_point_prints_one_line_and_exits_2():
    done = subprocess.run(
        [
            sys.executable,
            "online/online_main_smc.py",
            "--config",
            "config/UCB_smc.py:tiny_jpeg",
            "--config.smc.num_particles=0",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "num_particles" in lines[0], done.stderr


def test_a_run_from_an_older_version_resumes_with_the_new_fields_defaulted(make_config, tmp_path):
    import json

    from dasapp.run_dirs import write_marker
    from online.validation import resume_config

    run_dir = tmp_path / "old"
    run_dir.mkdir()
    write_marker(run_dir, "online-train")  # every run of this tool carries its marker
    stored = make_config().to_dict()
    del stored["report"]  # a field this version added
    stored["loop"]["num_rounds"] = 2
    (run_dir / "config.json").write_text(json.dumps(stored))
    config = make_config()
    config.resume_from = str(run_dir)
    resumed = resume_config(config, overrides={})
    assert resumed.report is False and resumed.loop.num_rounds == 2  # the stored count, not the variant's 3
    config.seed = 9
    with pytest.raises(ConfigError, match="seed is 0 in its config.json but 9 here"):
        resume_config(config, overrides={"seed": 9})


def test_a_run_older_than_the_speed_options_resumes_with_them_off(make_config, tmp_path):
    import json

    from dasapp.run_dirs import write_marker
    from online.validation import resume_config

    run_dir = tmp_path / "old"
    run_dir.mkdir()
    write_marker(run_dir, "online-train")
    stored = make_config().to_dict()
    del stored["smc"]["autocast"], stored["model"]["channels_last"], stored["model"]["compile_unet"]
    (run_dir / "config.json").write_text(json.dumps(stored))
    config = make_config()
    config.resume_from = str(run_dir)
    resumed = resume_config(config, overrides={})
    assert (resumed.smc.autocast, resumed.model.channels_last, resumed.model.compile_unet) == ("", False, False)
    config.smc.autocast = "bf16"
    with pytest.raises(ConfigError, match="smc.autocast is '' in its config.json but 'bf16' here"):
        resume_config(config, overrides={"smc.autocast": "bf16"})


def test_a_run_older_than_the_proposal_options_resumes_only_with_their_old_behaviour(make_config, tmp_path):
    import json

    from dasapp.run_dirs import write_marker
    from online.validation import resume_config

    run_dir = tmp_path / "old"
    run_dir.mkdir()
    write_marker(run_dir, "online-train")  # every run of this tool carries its marker
    stored = make_config().to_dict()
    for field in ("gradient", "gradient_every", "gradient_after", "gradient_reuse"):
        del stored["smc"][field]  # a run made before the proposal options existed
    (run_dir / "config.json").write_text(json.dumps(stored))
    config = make_config()
    config.resume_from = str(run_dir)
    resumed = resume_config(config, overrides={})
    assert (resumed.smc.gradient, resumed.smc.gradient_every) == ("auto", 1)  # what the old run did
    assert (resumed.smc.gradient_after, resumed.smc.gradient_reuse) == (0.0, False)
    config.smc.gradient = "jacobian_free"
    with pytest.raises(ConfigError, match="smc.gradient is 'auto' in its config.json but 'jacobian_free' here"):
        resume_config(config, overrides={"smc.gradient": "jacobian_free"})
