"""Per-round metrics: reward statistics, batch diversity, and where they are written."""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch


def diversity(features: torch.Tensor) -> float:
    """Mean pairwise cosine distance ``1 − cos(φ_i, φ_j)`` over a batch's features, `(n, D)`."""
    if features.shape[0] < 2:
        return 0.0
    unit = torch.nn.functional.normalize(features.double(), dim=-1)
    similarity = unit @ unit.T
    n = features.shape[0]
    off_diagonal = (similarity.sum() - similarity.diagonal().sum()) / (n * (n - 1))
    return float(1.0 - off_diagonal)


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
    print(f"{'round':>5s} {'queries':>8s} {'true mean':>10s} {'true max':>9s} {'true std':>9s} {'diversity':>9s} {'failed':>6s}")
    for row in rows:
        print(
            f"{row['round']:>5d} {row['queries_total']:>8d} {row['true_reward']['mean']:>10.4f} "
            f"{row['true_reward']['max']:>9.4f} {row['true_reward']['std']:>9.4f} {row['diversity']:>9.4f} {row['failed_queries']:>6d}"
        )


def plot_reward_vs_queries(rows: list[dict], path: Path, title: str) -> None:
    """True reward of each round's batch (mean ± std, max) against the queries spent."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    queries = [row["queries_total"] for row in rows]
    mean = [row["true_reward"]["mean"] for row in rows]
    std = [row["true_reward"]["std"] for row in rows]
    best = [row["true_reward"]["max"] for row in rows]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(queries, mean, "o-", label="batch mean")
    ax.fill_between(queries, [m - s for m, s in zip(mean, std)], [m + s for m, s in zip(mean, std)], alpha=0.2, label="± std")
    ax.plot(queries, best, "s--", label="batch max")
    ax.set_xlabel("oracle queries spent")
    ax.set_ylabel("true reward of the round's batch")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
