"""The loop end to end on a tiny random pixel model: rounds, checkpoints, resume, evaluate."""

import json
import os
import signal
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from online.evaluate import run_evaluation
from online.loop import run_training
from online.run_directory import complete_rounds, load_dataset
from surrogate import load_surrogate
from tests import REPO_ROOT as REPO


def test_three_rounds_write_everything_a_later_run_needs(make_config, accelerator):
    config = make_config()
    run_dir = run_training(config, accelerator)
    assert complete_rounds(run_dir) == [0, 1, 2]
    data, prompts, rounds = load_dataset(run_dir)
    assert data["features"].shape == (6 + 4 + 4, 128) and len(prompts) == 14
    assert torch.equal(rounds, torch.tensor([0] * 6 + [1] * 4 + [2] * 4))
    assert data["images"].dtype == torch.uint8 and data["valid"].all()
    # label noise is added to the observed reward, the true one is kept beside it
    assert not torch.allclose(data["rewards"], data["true_rewards"])
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [row["round"] for row in rows] == [0, 1, 2] and rows[-1]["queries_total"] == 14
    for row in rows:
        assert set(row["seconds"]) >= {"sample", "query", "fit", "total"}
        assert 0 <= row["diversity"] <= 2
    assert rows[1]["surrogate_prediction_rmse"] is not None and 0 < rows[1]["ess_fraction"] <= 1
    # the previous round's surrogate scored on this round's answers, every round after the first
    assert rows[0]["calibration"] is None
    for row in rows[1:]:
        calibration = row["calibration"]
        assert calibration["n"] == 4 and calibration["rmse"] == row["surrogate_prediction_rmse"]
        assert all(0 <= calibration[f"coverage_{p}"] <= 1 for p in (50, 80, 95))
    for k in range(3):
        folder = run_dir / f"round_{k:04d}"
        assert {"COMPLETE", "surrogate.safetensors", "config.json", "rng.json", "metrics.json"} <= {
            p.name for p in folder.iterdir()
        }
        surrogate = load_surrogate(folder / "surrogate.safetensors", expected_kind="ucb", expected_input_dim=128)
        assert surrogate.n_data == 6 + 4 * k
    assert (run_dir / "reward_vs_queries.png").stat().st_size > 0


def test_a_resumed_run_draws_what_an_uninterrupted_one_draws(make_config, accelerator, tmp_path):
    whole = make_config()
    whole.run_name = "whole"
    whole.loop.num_rounds = 3
    whole_dir = run_training(whole, accelerator)

    part = make_config()
    part.run_name = "part"
    part.loop.num_rounds = 2
    part_dir = run_training(part, accelerator)
    again = make_config()
    again.resume_from = str(part_dir)
    again.loop.num_rounds = 3
    run_training(again, accelerator)

    assert complete_rounds(part_dir) == [0, 1, 2]
    assert json.loads((part_dir / "config.json").read_text())["loop"]["num_rounds"] == 3, "the extension is recorded"
    for k in range(3):
        a = load_file(whole_dir / "data" / f"round_{k:04d}.safetensors")
        b = load_file(part_dir / "data" / f"round_{k:04d}.safetensors")
        assert torch.equal(a["images"], b["images"]) and torch.allclose(a["rewards"], b["rewards"])


def test_a_round_interrupted_after_its_answers_is_not_asked_again(make_config, accelerator, monkeypatch):
    config = make_config()
    config.loop.num_rounds = 2
    run_dir = run_training(config, accelerator)
    # Simulate a crash after round 1's shard was written but before its checkpoint.
    (run_dir / "round_0001" / "COMPLETE").unlink()
    before = load_file(run_dir / "data" / "round_0001.safetensors")
    resumed = make_config()
    resumed.resume_from = str(run_dir)
    resumed.loop.num_rounds = 2

    def no_queries(images, prompts):
        raise AssertionError("the resumed round asked the oracle again")

    monkeypatch.setattr("online.builders.build_oracle", lambda config: no_queries)
    run_training(resumed, accelerator)
    after = load_file(run_dir / "data" / "round_0001.safetensors")
    assert complete_rounds(run_dir) == [0, 1]
    assert torch.equal(before["rewards"], after["rewards"]) and after["valid"].all()


def test_evaluate_mode_loads_a_round_checkpoint(make_config, accelerator):
    train = make_config()
    train.loop.num_rounds = 2
    run_dir = run_training(train, accelerator)
    config = make_config("tiny_evaluate")
    config.run_name = "eval"
    config.reward_model_path = str(run_dir / "round_0001")
    out = run_evaluation(config, accelerator)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["num_images"] == 3 and len(metrics["images"]) == 3
    assert metrics["true_reward"]["mean"] < 0  # negated JPEG kB
    assert (out / "grid.png").is_file() and len(list((out / "images").glob("*.png"))) == 3


ORACLE_SCRIPT = """
import hashlib, os, signal, sys
from pathlib import Path
log = Path(sys.argv[1]); kill_flag = Path(sys.argv[2])
for line in sys.stdin:
    path = line.split("\\t")[0]
    digest = hashlib.sha1(Path(path).read_bytes()).hexdigest()
    with open(log, "a") as handle:
        handle.write(digest + "\\n")
    asked = len(log.read_text().splitlines())
    if kill_flag.exists() and asked >= int(kill_flag.read_text()):
        kill_flag.unlink()
        os.kill(os.getppid(), signal.SIGKILL)
        sys.exit(1)
    print(len(digest) + int(digest[:4], 16) / 65536)
"""


@pytest.mark.slow  # the default suite kills mid-query in tests/online/test_kill_resume.py (5-minute budget)
def test_sigkill_mid_query_loses_no_paid_answer(tiny_model, tmp_path):
    """The loop is killed while round 1 is being queried; the resumed run asks no answered item again."""
    script = tmp_path / "oracle.py"
    script.write_text(ORACLE_SCRIPT)
    log, kill_flag = tmp_path / "asked.log", tmp_path / "kill_at"
    kill_flag.write_text("8")  # round 0 asks 6 items; die on the 2nd item of round 1
    command = [sys.executable, str(script), str(log), str(kill_flag)]
    base = [
        sys.executable,
        "online/online_main_smc.py",
        "--config",
        "config/UCB_smc.py:tiny_jpeg",
        f"--config.model.path={tiny_model}",
        "--config.model.num_steps=2",
        f"--config.output_dir={tmp_path / 'runs'}",
        "--config.run_name=killed",
        "--config.progress=False",
        "--config.device=cpu",
        "--config.smc.num_particles=2",
        "--config.loop.initial_queries=6",
        "--config.loop.queries_per_round=4",
        "--config.loop.num_rounds=3",
        "--config.oracle.kind=external",
        f"--config.oracle.command={tuple(command)!r}",
        "--config.oracle.batch_size=1",
        "--config.oracle.noise_std=0.0",
        "--config.surrogate.kwargs.max_epochs=10",
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    first = subprocess.run(base, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert first.returncode == -signal.SIGKILL, first.stderr[-2000:]
    run_dir = tmp_path / "runs" / "killed"
    assert complete_rounds(run_dir) == [0]
    answered_before = [
        json.loads(line) for line in (run_dir / "round_0001" / "answers.jsonl").read_text().splitlines()
    ]
    assert [row["index"] for row in answered_before] == [0]

    resumed = subprocess.run(
        base + [f"--config.resume_from={run_dir}"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert complete_rounds(run_dir) == [0, 1, 2]
    asked = log.read_text().splitlines()
    # 6 + 4 + 4 items, plus one repeat: the item whose call was in flight when the loop died
    assert len(asked) == 15 and len(set(asked)) == 14
    shard = load_file(run_dir / "data" / "round_0001.safetensors")
    assert shard["valid"].all() and abs(float(shard["rewards"][0]) - answered_before[0]["reward"]) < 1e-12


@pytest.mark.slow  # two processes run by default in tests/online/test_accelerate_launch.py (5-minute budget)
def test_two_processes_split_prompts_and_write_once(tiny_model, tmp_path):
    out = tmp_path / "runs"
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "online/online_main_smc.py",
        "--config",
        "config/UCB_smc.py:tiny_jpeg",
        f"--config.model.path={tiny_model}",
        "--config.model.num_steps=2",
        f"--config.output_dir={out}",
        "--config.run_name=ddp",
        "--config.progress=False",
        "--config.device=cpu",
        "--config.smc.num_particles=2",
        "--config.loop.initial_queries=5",
        "--config.loop.queries_per_round=3",
        "--config.loop.num_rounds=2",
        "--config.surrogate.kwargs.max_epochs=10",
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]
    run_dir = out / "ddp"
    assert complete_rounds(run_dir) == [0, 1]
    data, prompts, _ = load_dataset(run_dir)
    assert data["features"].shape[0] == 5 + 3 and len(prompts) == 8
    assert done.stdout.count("Run directory:") == 1  # the summary is printed by the main process only


def test_thompson_guidance_runs_a_round_of_the_embedded_world_with_one_draw_per_call(
    make_config, accelerator, monkeypatch
):
    from config.online_base import WORLD_MODEL
    from surrogate import ThompsonSample

    config = make_config(kind="bootstrap")
    config.model.path = WORLD_MODEL  # the shipped world model, a few steps
    config.smc.guidance = "thompson"
    config.smc.prompts_per_call = 1  # round 1 asks 4 prompts: 4 sampler calls, 4 draws
    config.loop.num_rounds = 2
    heads = []
    real = ThompsonSample.__init__

    def spy(self, surrogate, generator=None):
        real(self, surrogate, generator)
        state = torch.Generator()
        state.set_state(self._state)
        heads.append(surrogate._head(state))  # the head this draw scores with

    monkeypatch.setattr(ThompsonSample, "__init__", spy)
    run_dir = run_training(config, accelerator)
    assert complete_rounds(run_dir) == [0, 1]
    assert len(heads) == 4 and len(set(heads)) > 1  # a fresh posterior draw per call
    first = list(heads)
    heads.clear()
    again = make_config(kind="bootstrap")
    again.model.path, again.smc.guidance, again.smc.prompts_per_call, again.loop.num_rounds = (
        WORLD_MODEL,
        "thompson",
        1,
        2,
    )
    again.run_name = "again"
    run_training(again, accelerator)
    assert heads == first  # the draws are seeded from (seed, round, rank, call): a resume draws the same


def test_thompson_guidance_is_refused_for_surrogates_without_a_posterior_draw(make_config):
    import pytest

    from online.validation import ConfigError, validate

    config = make_config(kind="gp")
    config.smc.guidance = "thompson"
    with pytest.raises(ConfigError, match="thompson"):
        validate(config)


def test_reference_guidance_none_samples_the_pretrained_chain_every_round(make_config, accelerator, monkeypatch):
    import online.sampling as sampling

    particles = []
    real = sampling.sample_batch

    def spy(sampler, reward_for_call, featurizer, prompts, *args, **kw):
        particles.append((sampler.num_particles, len(prompts), reward_for_call(0).differentiable))
        return real(sampler, reward_for_call, featurizer, prompts, *args, **kw)

    monkeypatch.setattr(sampling, "sample_batch", spy)
    config = make_config(variant="tiny_colorfulness", kind="greedy")
    config.smc.guidance = "none"
    run_dir = run_training(config, accelerator)
    assert complete_rounds(run_dir) == [0, 1, 2]
    # one particle, no reward, the round's query count: round 0's 6, then 4 per round
    assert particles == [(1, 6, False), (1, 4, False), (1, 4, False)]


def test_reference_guidance_oracle_guides_the_sampler_by_the_true_oracle(make_config, accelerator, monkeypatch):
    import online.sampling as sampling
    from das.rewards.colorfulness import ColorfulnessReward

    rewards = []
    real = sampling.sample_batch

    def spy(sampler, reward_for_call, featurizer, prompts, *args, **kw):
        rewards.append((type(reward_for_call(0)), sampler.num_particles))
        return real(sampler, reward_for_call, featurizer, prompts, *args, **kw)

    monkeypatch.setattr(sampling, "sample_batch", spy)
    config = make_config(variant="tiny_colorfulness", kind="greedy")
    config.smc.guidance = "oracle"
    config.loop.num_rounds = 2
    run_training(config, accelerator)
    assert rewards[1] == (ColorfulnessReward, config.smc.num_particles)


def test_the_ceiling_is_refused_for_an_external_oracle(make_config):
    import pytest

    from online.validation import ConfigError, validate

    config = make_config()
    config.smc.guidance = "oracle"
    config.oracle.kind = "external"
    config.oracle.command = ("python", "rate.py")
    with pytest.raises(ConfigError, match="external"):
        validate(config)
