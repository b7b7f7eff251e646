"""``acquisition.beta_schedule``: β constant, or growing with the round as GP-UCB's theory asks; both the
guidance acquisition and the pool's batch selection use round k's β, and a run records it per round."""

from __future__ import annotations

import json
import math

import pytest

from config.online_base import online_config
from online import builders
from online.validation import ADDED_FIELDS


def _config(schedule: str, beta: float = 2.0):
    config = online_config("ucb", "tiny_jpeg", method="test")
    config.acquisition.kind, config.acquisition.beta, config.acquisition.beta_schedule = "ucb", beta, schedule
    return config


def _surrogate():
    from surrogate import make_surrogate

    return make_surrogate("ucb", input_dim=4, hidden=(8,))


def test_gp_ucb_beta_has_its_closed_form_values():
    config = _config("gp_ucb", beta=2.0)
    # δ = 0.1: log(π²/0.6) = log(16.4493...), by hand
    first = math.log(math.pi**2 / 0.6)
    assert builders.round_beta(config, 1) == pytest.approx(2.0)
    assert builders.round_beta(config, 2) == pytest.approx(2.0 * math.sqrt(math.log(4 * math.pi**2 / 0.6) / first))
    assert builders.round_beta(config, 5) == pytest.approx(2.0 * math.sqrt(math.log(25 * math.pi**2 / 0.6) / first))
    assert builders.round_beta(config, 2) == pytest.approx(2.0 * 1.22277, rel=1e-4)  # grows, slowly
    with pytest.raises(ValueError, match="round 1"):
        builders.round_beta(config, 0)


def test_the_constant_schedule_is_the_configured_beta_in_every_round():
    config = _config("constant", beta=0.7)
    assert [builders.round_beta(config, k) for k in (0, 1, 2, 5, 256)] == [0.7] * 5


def test_round_three_guidance_and_pool_selection_use_the_grown_beta():
    from online.loop import _guidance

    config = _config("gp_ucb", beta=1.5)
    grown = 1.5 * math.sqrt(math.log(9 * math.pi**2 / 0.6) / math.log(math.pi**2 / 0.6))
    assert builders.build_acquisition(config, _surrogate(), 3).beta == pytest.approx(grown)
    reward = _guidance(config, 3, featurizer=None, surrogate=_surrogate(), rank=0)(0)
    assert reward.acquisition.beta == pytest.approx(grown)
    assert builders.batch_selection_settings(config, 3) == {"beta": pytest.approx(grown)}
    config.acquisition.beta_schedule = "constant"
    assert builders.build_acquisition(config, _surrogate(), 3).beta == 1.5
    assert builders.batch_selection_settings(config, 3) == {"beta": 1.5}


def test_the_field_defaults_to_the_old_behaviour_and_an_older_run_resumes_with_it(make_config, tmp_path):
    from dasapp.run_dirs import write_marker
    from online.validation import resume_config

    assert ADDED_FIELDS["acquisition.beta_schedule"] == "constant"
    assert make_config().acquisition.beta_schedule == "constant"
    run_dir = tmp_path / "old"
    run_dir.mkdir()
    write_marker(run_dir, "online-train")
    stored = make_config().to_dict()
    del stored["acquisition"]["beta_schedule"]  # a run made before the field existed
    (run_dir / "config.json").write_text(json.dumps(stored))
    config = make_config()
    config.resume_from = str(run_dir)
    assert resume_config(config, overrides={}).acquisition.beta_schedule == "constant"


def test_a_gp_ucb_run_guides_selects_and_records_with_each_rounds_beta(make_config, accelerator, monkeypatch):
    import online.loop
    import surrogate.batch_selection as batch_selection
    from online.loop import run_training

    seen = {"guidance": [], "select": []}
    real_sample, real_select = online.loop.sample_prompts, batch_selection.select_batch

    def spy_sample(setup, rewards, prompts, *args):
        acquisition = getattr(rewards(0), "acquisition", None)
        if acquisition is not None:
            seen["guidance"].append(acquisition.beta)
        return real_sample(setup, rewards, prompts, *args)

    def spy_select(*args, **kwargs):
        seen["select"].append(kwargs["beta"])
        return real_select(*args, **kwargs)

    monkeypatch.setattr(online.loop, "sample_prompts", spy_sample)
    monkeypatch.setattr(batch_selection, "select_batch", spy_select)
    config = make_config()
    config.acquisition.beta, config.acquisition.beta_schedule = 1.0, "gp_ucb"
    config.loop.pool_size, config.loop.acquisition = 4, "qucb"
    run_dir = run_training(config, accelerator)

    expected = [builders.round_beta(config, k) for k in (1, 2)]
    assert expected[0] == 1.0 and expected[1] > 1.0
    assert seen["guidance"] == expected and seen["select"] == expected
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert "beta" not in rows[0] and [row["beta"] for row in rows[1:]] == expected


def test_an_exploiting_last_round_is_guided_and_chosen_by_the_posterior_mean(make_config, accelerator, monkeypatch):
    """``acquisition.exploit_last_round``: rounds before the last keep the run's optimism; the last one is
    guided by the posterior mean (β = 0) and its pool's batch is the top of the mean (qUCB with β = 0)."""
    import online.loop
    import surrogate.batch_selection as batch_selection
    from online.loop import run_training
    from surrogate import PosteriorMean

    seen = {"guidance": [], "select": []}
    real_sample, real_select = online.loop.sample_prompts, batch_selection.select_batch

    def spy_sample(setup, rewards, prompts, *args):
        acquisition = getattr(rewards(0), "acquisition", None)
        if acquisition is not None:
            seen["guidance"].append(type(acquisition).__name__)
        return real_sample(setup, rewards, prompts, *args)

    def spy_select(surrogate, features, size, rule, generator, **kwargs):
        seen["select"].append((rule, kwargs["beta"]))
        return real_select(surrogate, features, size, rule, generator, **kwargs)

    monkeypatch.setattr(online.loop, "sample_prompts", spy_sample)
    monkeypatch.setattr(batch_selection, "select_batch", spy_select)
    config = make_config()
    config.acquisition.beta, config.acquisition.exploit_last_round = 1.5, True
    config.loop.pool_size, config.loop.acquisition = 4, "penalized"
    run_dir = run_training(config, accelerator)

    assert config.loop.num_rounds == 3
    assert seen["guidance"] == ["UCB", PosteriorMean.__name__]
    assert seen["select"] == [("penalized", 1.5), ("qucb", 0.0)]
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [row["beta"] for row in rows[1:]] == [1.5, 0.0]
    assert ADDED_FIELDS["acquisition.exploit_last_round"] is False
    assert make_config().acquisition.exploit_last_round is False
