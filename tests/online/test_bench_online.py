"""The online benchmark's bookkeeping: equal budgets per method, and its summary against hand-computed figures."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import pytest

from benchmarks.bench_online import METHODS, run_argv, summarize
from online.analysis import Run


def settings(**changes) -> argparse.Namespace:
    base = dict(runs="/tmp/r", rounds=4, initial_queries=36, queries_per_round=12, steps=10, particles=4)
    return argparse.Namespace(**{**base, **changes})


def flag(argv: list[str], name: str) -> str:
    return next(a.split("=", 1)[1] for a in argv if a.startswith(f"--config.{name}="))


@pytest.mark.parametrize("rounds", [2, 4, 7])
def test_every_method_spends_the_same_query_budget(rounds):
    args = settings(rounds=rounds)
    budgets = {}
    for method in METHODS:
        argv = run_argv(method, "rare", 0, args)
        n, initial, per_round = (
            int(flag(argv, f"loop.{f}")) for f in ("num_rounds", "initial_queries", "queries_per_round")
        )
        budgets[method] = initial + (n - 1) * per_round
    assert set(budgets.values()) == {36 + (rounds - 1) * 12}
    non_adaptive = run_argv("non-adaptive", "rare", 0, args)
    assert flag(non_adaptive, "loop.num_rounds") == "2"  # one fit, one guided batch


def test_reference_methods_are_named_in_their_configs():
    args = settings()
    assert "--config.smc.guidance=none" in run_argv("pretrained", "jpeg", 3, args)
    assert "--config.smc.guidance=oracle" in run_argv("ceiling", "jpeg", 3, args)
    assert "--config.smc.guidance=thompson" in run_argv("thompson", "jpeg", 3, args)
    assert flag(run_argv("ucb", "jpeg", 3, args), "method") == "UCB"
    assert flag(run_argv("ucb", "jpeg", 3, args), "seed") == "3"


def fake_run(method: str, seed: int, final: float) -> Run:
    row = {"round": 0, "queries_total": 72, "true_reward": {"mean": final, "max": final}, "diversity": 0.1}
    return Run(Path(f"/x/{method}{seed}"), {"method": method, "seed": seed, "oracle": {"kind": "rare"}}, [row])


def test_the_summary_gives_gain_fractions_and_leads_in_standard_errors():
    finals = {
        "Pretrained": [0.2, 0.2],
        "Ceiling": [0.6, 0.6],
        "UCB": [0.5, 0.4],
        "Greedy": [0.3, 0.3],
        "Non-adaptive": [0.1, 0.3],
    }
    runs = [fake_run(method, seed, value) for method, values in finals.items() for seed, value in enumerate(values)]
    summary, comparisons = summarize(runs, ["ucb", "greedy", "non-adaptive", "pretrained", "ceiling"])
    rows = {row["method"]: row for row in summary}
    assert rows["ucb"]["final_true_reward_mean"] == pytest.approx(0.45)
    assert rows["ucb"]["final_true_reward_se"] == pytest.approx(0.05)  # std 0.0707 / sqrt 2
    assert rows["ucb"]["gain_fraction_of_ceiling"] == pytest.approx((0.45 - 0.2) / (0.6 - 0.2))
    assert rows["greedy"]["gain_fraction_of_ceiling"] == pytest.approx(0.25)
    assert rows["ceiling"]["gain_fraction_of_ceiling"] == pytest.approx(1.0)
    assert rows["pretrained"]["gain_fraction_of_ceiling"] == pytest.approx(0.0)
    (entry,) = comparisons
    assert entry["best_optimistic"] == "ucb"
    assert entry["lead_over_greedy"] == pytest.approx(0.15)
    assert entry["lead_over_greedy_in_se"] == pytest.approx(0.15 / 0.05)  # greedy's se is 0
    assert entry["lead_over_non-adaptive_in_se"] == pytest.approx(0.25 / math.hypot(0.05, 0.1))
