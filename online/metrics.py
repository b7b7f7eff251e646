"""Metrics: reward statistics, batch diversity, a training round's and an evaluation's
records, the end-of-run table and figure."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import torch

from das.features import mean_cosine_distance


def diversity(features: torch.Tensor) -> float:
    """Mean pairwise cosine distance ``1 − cos(φ_i, φ_j)`` over a batch's features, `(n, D)`."""
    return mean_cosine_distance(features)


def summary(values: torch.Tensor) -> dict[str, float]:
    """Mean, std, max and min of the finite entries."""
    finite = values[torch.isfinite(values)].double()
    if finite.numel() == 0:
        return {"mean": math.nan, "std": math.nan, "max": math.nan, "min": math.nan}
    return {
        "mean": float(finite.mean()),
        "std": float(finite.std(unbiased=False)),
        "max": float(finite.max()),
        "min": float(finite.min()),
    }


def round_metrics(
    k: int,
    shard_rows: dict,
    previous_rows: list[dict],
    batch_stats: dict,
    calibration: dict | None,
    fit_info: dict,
) -> dict:
    """Round `k`'s record (``metrics.json``, one line of ``metrics.jsonl``), from its dataset
    shard's rows, the records of the rounds before it, the sampler's statistics of its batch,
    the previous surrogate's calibration on its answers and the fit's summary."""
    queries = int(shard_rows["valid"].numel())
    total = queries + (previous_rows[-1]["queries_total"] if previous_rows else 0)
    return {
        "round": k,
        "queries_round": queries,
        "queries_total": total,
        "failed_queries": int((~shard_rows["valid"]).sum()),
        "true_reward": summary(shard_rows["true_rewards"]),
        "observed_reward": summary(shard_rows["rewards"]),
        "diversity": diversity(shard_rows["features"]),
        "surrogate_prediction_rmse": None if calibration is None else calibration["rmse"],
        "calibration": calibration,
        "surrogate_fit": fit_info,
        **batch_stats,
    }


def evaluation_metrics(
    batch: dict,
    true: torch.Tensor,
    predicted: torch.Tensor,
    checkpoint: Path,
    oracle: str,
    image_name: Callable[[int], str],
) -> dict:
    """An evaluation's ``metrics.json``: the true rewards `true` `(n,)` (NaN where the oracle
    failed) and surrogate means `predicted` `(n,)` of `batch`, overall, per prompt and per image
    (``image_name(i)``: image ``i``'s file)."""
    values = true.tolist()
    per_prompt: dict[str, list[float]] = {}
    for prompt, value in zip(batch["prompts"], values):
        per_prompt.setdefault(prompt, []).append(value)
    return {
        "checkpoint": str(checkpoint),
        "oracle": oracle,
        "num_images": len(batch["prompts"]),
        "failed_queries": int(torch.isnan(true).sum()),
        "true_reward": summary(true),
        "surrogate_mean": summary(predicted),
        "diversity": diversity(batch["features"]),
        "ess_fraction": float(batch["ess_fraction"].mean()),
        "per_prompt_mean": {p: sum(v) / len(v) for p, v in per_prompt.items()},
        "images": [
            {"file": image_name(i), "prompt": p, "true_reward": t}
            for i, (p, t) in enumerate(zip(batch["prompts"], values))
        ],
    }


def print_table(rows: list[dict]) -> None:
    """The per-round table of the true reward printed at the end of a run."""
    heads = ("round", "queries", "true mean", "true max", "true std", "diversity", "failed")
    widths = (5, 8, 10, 9, 9, 9, 6)
    print(" ".join(f"{head:>{width}s}" for head, width in zip(heads, widths)))
    for row in rows:
        true = row["true_reward"]
        print(
            f"{row['round']:>5d} {row['queries_total']:>8d} {true['mean']:>10.4f} {true['max']:>9.4f} "
            f"{true['std']:>9.4f} {row['diversity']:>9.4f} {row['failed_queries']:>6d}"
        )


def plot_reward_vs_queries(rows: list[dict], path: Path, title: str) -> None:
    """True reward of each round's batch (mean with its 95% interval, max) against the queries
    spent, over a band for round 0 (pretrained samples): the line a run has to rise above."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    queries = [row["queries_total"] for row in rows]
    mean = [row["true_reward"]["mean"] for row in rows]
    half = [_half_width(row) for row in rows]
    best = [row["true_reward"]["max"] for row in rows]
    fig, ax = plt.subplots(figsize=(6, 4))
    if rows and rows[0]["round"] == 0 and math.isfinite(mean[0]):
        ax.axhspan(mean[0] - half[0], mean[0] + half[0], color="grey", alpha=0.2)
        ax.axhline(mean[0], color="grey", linestyle=":", label="pretrained (round 0) mean, 95% interval")
    ax.plot(queries, mean, "o-", label="batch mean")
    ax.fill_between(
        queries,
        [m - h for m, h in zip(mean, half)],
        [m + h for m, h in zip(mean, half)],
        alpha=0.2,
        label="95% interval of the mean",
    )
    ax.plot(queries, best, "s--", label="batch max")
    ax.set_xlabel("oracle queries spent")
    ax.set_ylabel("true reward of the round's batch")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _half_width(row: dict) -> float:
    """1.96 standard errors of a round's batch mean (its answered items)."""
    n = row["queries_round"] - row.get("failed_queries", 0)
    return 1.96 * row["true_reward"]["std"] / math.sqrt(n) if n > 1 else 0.0
