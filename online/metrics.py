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
    staged: dict,
    answers: dict[int, dict],
    checkpoint: Path,
    oracle: str,
    image_name: Callable[[int], str],
) -> dict:
    """An evaluation's ``metrics.json``, strict JSON (``null`` where there is no number).

    Args:
        staged: the evaluation's staged batch: ``prompts`` (n), ``features`` `(n, D)`, the
            surrogate means ``predicted`` `(n,)` and the sampler's ``ess_fraction`` (or None).
        answers: the journaled answers, item index -> journal row (:func:`answered_value`).
        checkpoint: the surrogate checkpoint the batch was sampled with.
        oracle: the oracle's kind.
        image_name: ``i`` -> image ``i``'s file.

    Returns:
        The counts (``num_images``, ``answered``, ``failed_queries``), the true rewards over the
        answered items and the surrogate means (``null`` statistics when there are none), the
        diversity, the ESS, the mean per prompt and a row per image.
    """
    prompts = staged["prompts"]
    values = [answered_value(answers.get(i)) for i in range(len(prompts))]
    true = torch.tensor([math.nan if v is None else v for v in values], dtype=torch.float64)
    per_prompt: dict[str, list[float]] = {}
    for prompt, value in zip(prompts, values):
        per_prompt.setdefault(prompt, []).extend([] if value is None else [value])
    answered = sum(value is not None for value in values)
    predicted = staged["predicted"].double().tolist()
    return {
        "checkpoint": str(checkpoint),
        "oracle": oracle,
        "num_images": len(prompts),
        "answered": answered,
        "failed_queries": len(prompts) - answered,
        "true_reward": strict_summary(true),
        "surrogate_mean": strict_summary(staged["predicted"]),
        "diversity": finite_or_none(diversity(staged["features"])),
        "ess_fraction": finite_or_none(staged["ess_fraction"]),
        "per_prompt_mean": {p: sum(v) / len(v) if v else None for p, v in per_prompt.items()},
        "images": [
            {"file": image_name(i), "prompt": p, "true_reward": t, "surrogate_mean": finite_or_none(m)}
            for i, (p, t, m) in enumerate(zip(prompts, values, predicted))
        ],
    }


def answered_value(row: dict | None) -> float | None:
    """The true reward an evaluation's journal row holds: a finite number when the item was
    answered, else None (failed, never asked, or a row that is not this tool's)."""
    if not isinstance(row, dict) or row.get("status") != "ok":
        return None
    value = row.get("true_reward", row.get("value"))
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def strict_summary(values: torch.Tensor) -> dict[str, float | None]:
    """:func:`summary` with None (JSON ``null``) where it has no finite number."""
    return {key: finite_or_none(value) for key, value in summary(values).items()}


def finite_or_none(value) -> float | None:
    """`value` as a float when it is a finite number, else None."""
    if value is None or isinstance(value, bool):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


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
