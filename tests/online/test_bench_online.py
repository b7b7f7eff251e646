"""The online benchmark's bookkeeping: equal budgets, shared round 0, paired statistics against hand-computed
figures, the per-run metrics read from a run directory, and the README table made from ``online.json``."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import pytest
import torch

from benchmarks.bench_online import (
    DEFAULT_METHOD,
    METHODS,
    POOL_OVERRIDES,
    evaluate_argv,
    paired,
    plan_jobs,
    run_argv,
    run_metrics,
    summarize,
)
from online.storage import save_rows


def settings(**changes) -> argparse.Namespace:
    base = dict(
        runs="/tmp/r", rounds=4, initial_queries=36, queries_per_round=12, steps=10, particles=4, eval_images=4
    )
    return argparse.Namespace(**{**base, **changes})


def flag(argv: list[str], name: str) -> str:
    """The value of ``--config.<name>`` in `argv` (the last one: the command line's last override wins)."""
    return [a.split("=", 1)[1] for a in argv if a.startswith(f"--config.{name}=")][-1]


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
    assert flag(run_argv("non-adaptive", "rare", 0, settings()), "loop.num_rounds") == "2"


def test_pool_methods_share_the_pool_and_round_0_and_the_greedy_pool_uses_no_optimism():
    args = settings()
    pool_methods = [name for name, method in METHODS.items() if method.pool]
    assert {"gp-mean", "non-adaptive", "gp-qucb"} <= set(pool_methods)
    for name in pool_methods:
        argv = run_argv(name, "rare", 2, args)
        assert set(POOL_OVERRIDES) <= set(argv), name
        assert flag(argv, "seed") == "2"
    for name in set(METHODS) - set(pool_methods):
        assert flag(run_argv(name, "rare", 2, args), "loop.pool_size") == "0", name
        assert flag(run_argv(name, "rare", 2, args), "loop.initial_pool_size") == "0", name
    greedy, default = run_argv("gp-mean", "rare", 0, args), run_argv(DEFAULT_METHOD, "rare", 0, args)
    assert flag(greedy, "acquisition.kind") == "mean" and flag(greedy, "acquisition.beta") == "0.0"
    assert flag(greedy, "loop.acquisition") == "qucb"  # with β = 0: the top of the posterior mean
    for field in ("pool_size", "pool_pretrained", "images_per_prompt", "initial_pool_size", "initial_selection"):
        assert flag(greedy, f"loop.{field}") == flag(default, f"loop.{field}"), field
    assert METHODS["gp-mean"].config == METHODS[DEFAULT_METHOD].config  # the same surrogate
    assert "--config.smc.guidance=none" in run_argv("pretrained", "jpeg", 3, args)
    assert "--config.smc.guidance=oracle" in run_argv("ceiling", "jpeg", 3, args)


def test_the_default_method_is_what_the_world_configs_do_by_default():
    """The default method's overrides change nothing in the world variants beyond the benchmark's budget."""
    from config.online_base import online_config

    spec = METHODS[DEFAULT_METHOD]
    kind = {"config/GP_smc.py": "gp", "config/UCB_smc.py": "ucb", "config/Bootstrap_smc.py": "bootstrap"}
    config = online_config(kind[spec.config], "tiny_rare", method="x")
    effective = dict(override[len("--config.") :].split("=", 1) for override in spec.argv())
    for field, value in effective.items():
        section, name = field.split(".")
        assert str(config[section][name]) == value, field


def test_evaluations_follow_the_evaluated_methods_runs_with_the_pretrained_reference():
    args = settings()
    plan = {
        "tasks": {"rare": {"seeds": [0, 1], "methods": ["pretrained", "greedy", "gp-qucb"]}},
        "evaluate": ["gp-qucb"],
    }
    jobs, after = plan_jobs(plan, args)
    assert len(jobs) == 6
    assert [job[-1] for job in jobs if "gp-qucb" in job[2]] == [4, 4]
    assert after["rare-greedy-s0"] == [] and after["rare-pretrained-s1"] == []
    (mine, reference) = after["rare-gp-qucb-s1"]
    assert flag(mine[1], "mode") == flag(reference[1], "mode") == "evaluate"
    checkpoint = str(Path("/tmp/r") / "rare-gp-qucb-s1" / "round_0003")
    assert flag(mine[1], "reward_model_path") == flag(reference[1], "reward_model_path") == checkpoint
    assert "--config.smc.guidance=none" in reference[1] and "--config.smc.guidance=none" not in mine[1]
    assert mine[2].endswith("rare-gp-qucb-s1-evaluate") and reference[2].endswith("rare-pretrained-s1-evaluate")
    assert flag(evaluate_argv("gp-qucb", "jpeg", 0, args, "gp-qucb"), "evaluate.images_per_prompt") == "4"


def test_paired_differences_against_hand_computed_values():
    lead = paired({0: 0.5, 1: 0.4, 2: 0.9, 7: 1.0}, {0: 0.3, 1: 0.3, 2: 0.5})
    diffs = [0.2, 0.1, 0.4]  # seed 7 has no partner
    mean = sum(diffs) / 3
    se = math.sqrt(sum((d - mean) ** 2 for d in diffs) / 2 / 3)
    assert lead["seeds"] == 3
    assert lead["diff"] == pytest.approx(mean)
    assert lead["se"] == pytest.approx(se)
    assert lead["in_se"] == pytest.approx(mean / se)


def figures(final: float, evaluate: float | None = None) -> dict:
    out = {"final": final, "auc": final / 2, "best": final + 1, "queries": 72, "curve": []}
    if evaluate is not None:
        out["evaluate"] = evaluate
    return out


def test_the_summary_pairs_each_method_with_the_greedy_of_its_own_pool():
    finals = {
        "pretrained": [0.2, 0.2],
        "ceiling": [0.6, 0.6],
        "greedy": [0.3, 0.3],
        "gp-mean": [0.35, 0.25],
        "non-adaptive": [0.1, 0.3],
        "gp-qucb": [0.5, 0.4],
        "gp": [0.4, 0.36],
    }
    evaluations = {"pretrained": [0.1, 0.2], "gp-qucb": [0.4, 0.3]}
    per_run = {
        ("rare", m): {s: figures(v, (evaluations.get(m) or [None, None])[s]) for s, v in enumerate(values)}
        for m, values in finals.items()
    }
    summary, comparisons = summarize(per_run)
    rows = {row["method"]: row for row in summary}
    top = rows["gp-qucb"]
    assert top["final_true_reward_mean"] == pytest.approx(0.45)
    assert top["final_true_reward_se"] == pytest.approx(0.05)
    assert top["auc_mean"] == pytest.approx(0.225)
    assert top["gain_fraction_of_ceiling"] == pytest.approx((0.45 - 0.2) / 0.4)
    assert top["paired_vs_greedy"]["against"] == "gp-mean"
    assert top["paired_vs_greedy"]["diff"] == pytest.approx(0.15)  # per seed +0.15, +0.15: no spread
    assert math.isnan(top["paired_vs_greedy_se"])  # a zero paired SE gives no finite lead
    assert rows["gp"]["paired_vs_greedy"]["against"] == "greedy"
    assert rows["gp"]["paired_vs_greedy"]["diff"] == pytest.approx(0.08)
    assert rows["gp"]["paired_vs_greedy_se"] == pytest.approx(0.08 / 0.02)  # diffs 0.10, 0.06
    assert top["paired_vs_non_adaptive_se"] == pytest.approx(0.25 / 0.15)  # diffs 0.4, 0.1
    assert top["evaluate_true_reward_mean"] == pytest.approx(0.35)
    assert top["evaluate_vs_pretrained"]["diff"] == pytest.approx(0.2)
    assert "paired_vs_greedy" not in rows["greedy"]
    (entry,) = comparisons
    assert entry["best_with_uncertainty"] == "gp-qucb"


def write_run(path: Path, rows: list[dict], images: list[torch.Tensor]) -> None:
    path.mkdir(parents=True)
    (path / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    (path / "data").mkdir()
    for k, batch in enumerate(images):
        tensors = {
            "images": (batch * 255).round().to(torch.uint8),
            "valid": torch.ones(len(batch), dtype=torch.bool),
            "features": torch.zeros(len(batch), 2),
        }
        save_rows(path / "data" / f"round_{k:04d}.safetensors", tensors, ["p"] * len(batch), k)


def colour(rgb: tuple[float, float, float], n: int) -> torch.Tensor:
    return torch.tensor(rgb).view(1, 3, 1, 1).expand(n, 3, 8, 8).clone()


def test_run_metrics_reads_the_curve_the_hit_rate_and_the_evaluation(tmp_path):
    rows = [
        {"queries_round": 4, "queries_total": 4, "true_reward": {"mean": 0.2, "max": 0.5}},
        {"queries_round": 2, "queries_total": 6, "true_reward": {"mean": 0.8, "max": 1.1}},
    ]
    grey, orange = (0.5, 0.5, 0.5), (0.65, 0.5, 0.425)  # opponent means (0, 0) and (0.15, 0.15): the target
    write_run(tmp_path / "rare-x-s0", rows, [colour(grey, 4), torch.cat([colour(orange, 1), colour(grey, 1)])])
    (tmp_path / "rare-x-s0-evaluate").mkdir()
    (tmp_path / "rare-x-s0-evaluate" / "metrics.json").write_text(json.dumps({"true_reward": {"mean": 0.7}}))
    got = run_metrics(tmp_path / "rare-x-s0", "rare")
    assert got["final"] == 0.8 and got["best"] == 1.1 and got["queries"] == 6
    assert got["auc"] == pytest.approx((4 * 0.2 + 2 * 0.8) / 6)
    assert got["final_hit_rate"] == pytest.approx(0.5)
    assert got["hit_rate"] == pytest.approx(1 / 6)
    assert got["evaluate"] == 0.7
    assert run_metrics(tmp_path / "missing", "rare") is None
