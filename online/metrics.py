"""Per-round metrics: reward statistics, batch diversity, and where they are written."""

from __future__ import annotations

import json
import math
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


def write_metrics_lines(path: Path, rows: list[dict]) -> None:
    """Rewrites ``metrics.jsonl`` from the complete rounds' metrics (no duplicates on resume)."""
    from online.storage import atomic_write_bytes

    atomic_write_bytes(path, "".join(json.dumps(row) + "\n" for row in rows).encode("utf-8"))


def print_table(rows: list[dict]) -> None:
    """The per-round table of the true reward printed at the end of a run."""
    print(
        f"{'round':>5s} {'queries':>8s} {'true mean':>10s} {'true max':>9s} {'true std':>9s} {'diversity':>9s} {'failed':>6s}"
    )
    for row in rows:
        print(
            f"{row['round']:>5d} {row['queries_total']:>8d} {row['true_reward']['mean']:>10.4f} "
            f"{row['true_reward']['max']:>9.4f} {row['true_reward']['std']:>9.4f} {row['diversity']:>9.4f} {row['failed_queries']:>6d}"
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
