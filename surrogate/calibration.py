"""Calibration of a surrogate's uncertainty: one metric function, and the held-out variance fit.

:func:`calibration_metrics` scores a fitted surrogate on answers it has not seen (the online
loop calls it every round with the previous round's surrogate on this round's answers; the
benchmark calls it on held-out synthetic and embedded-world data). It reports how often the
central Gaussian intervals `mean ± z·std` cover the observed rewards (predictive std,
epistemic + noise) and, given the noise-free values (``truth=``), how often `mean ± z·std`
with the epistemic std covers them; the mean width of the 95% interval; the mean Gaussian
negative log-likelihood; the RMSE; and the Spearman rank correlation between mean and reward.

:func:`heldout_variance_split` is what the MLP surrogates (:mod:`surrogate.ucb`,
:mod:`surrogate.bootstrap`) use at fit time to turn the residuals of their validation split
into a calibrated error variance: the held-out mean squared error, shrunk towards the reward
variance by :data:`PRIOR_WEIGHT` pseudo-points (a surrogate that has seen few answers knows
little), minus the label-noise variance when the caller knows it. See those modules for why,
and for the coverages measured.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import NormalDist
from typing import Any

import numpy as np
import torch

#: Nominal central coverages reported by :func:`calibration_metrics`.
CALIBRATION_LEVELS: tuple[float, ...] = (0.5, 0.8, 0.95)

#: Pseudo-points at the reward variance added to the held-out squared residuals (see
#: :func:`heldout_variance_split`): with 2 held-out rows (16-24 answers) a third of the estimate,
#: with 77 rows and a good surrogate (held-out MSE 7% of the reward variance) +16% in variance.
PRIOR_WEIGHT = 1.0

#: The epistemic variance is kept >= this fraction of the held-out error variance when a
#: known label noise would leave nothing (or less) for the model's error.
MIN_EPISTEMIC_FRACTION = 0.01

#: Noise variance recorded, as a fraction of the held-out error variance, when the label noise
#: is unknown: everything is attributed to the model's error, and the stored noise std stays a
#: positive scale (1e-3 of the held-out RMSE; it changes the predictive std by < 1e-6 relative).
UNKNOWN_NOISE_FRACTION = 1e-6


def gaussian_z(level: float) -> float:
    """Half-width in stds of the central Gaussian interval of coverage ``level`` (0.95 -> 1.95996...)."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"A coverage level must lie in (0, 1), got {level!r}.")
    return NormalDist().inv_cdf(0.5 + 0.5 * level)


def average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks of ``values`` `(N,)`, ties given the average of the ranks they span; `(N,)` float64."""
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    order = np.argsort(values, kind="mergesort")
    ordered = values[order]
    starts_group = np.empty(values.shape[0], dtype=bool)
    starts_group[:1] = True
    starts_group[1:] = ordered[1:] != ordered[:-1]
    group = np.cumsum(starts_group) - 1  # group index of each sorted entry
    starts = np.flatnonzero(starts_group)
    ends = np.append(starts[1:], values.shape[0])  # exclusive
    ranks = np.empty(values.shape[0], dtype=np.float64)
    ranks[order] = ((starts + ends - 1) / 2.0 + 1.0)[group]
    return ranks


def spearman_correlation(a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor) -> float | None:
    """Spearman rank correlation of two `(N,)` vectors (Pearson correlation of average ranks).

    Returns ``None`` when it is undefined: fewer than two points, or a constant vector.
    """
    a = np.asarray(a.detach().cpu() if isinstance(a, torch.Tensor) else a, dtype=np.float64).reshape(-1)
    b = np.asarray(b.detach().cpu() if isinstance(b, torch.Tensor) else b, dtype=np.float64).reshape(-1)
    if a.shape != b.shape:
        raise ValueError(f"Spearman correlation needs vectors of one length, got {a.shape[0]} and {b.shape[0]}.")
    if a.shape[0] < 2:
        return None
    ra, rb = average_ranks(a), average_ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denominator = math.sqrt(float(ra @ ra) * float(rb @ rb))
    if denominator == 0.0:
        return None
    return float(np.clip(float(ra @ rb) / denominator, -1.0, 1.0))


def _json_float(value: float | torch.Tensor | None) -> float | None:
    """A finite Python float, or ``None`` for a missing / non-finite value (JSON has no NaN)."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _interval_metrics(
    mean: torch.Tensor, std: torch.Tensor, target: torch.Tensor, prefix: str, levels: Sequence[float]
) -> dict[str, float | None]:
    """Coverages, 95% width, NLL, RMSE of `target (n,)` under `N(mean (n,), std (n,)²)` and Spearman's rho, float64."""
    out: dict[str, float | None] = {}
    n = target.shape[0]
    error = target - mean
    for level in levels:
        key = f"{prefix}coverage_{round(100 * level)}"
        out[key] = _json_float((error.abs() <= gaussian_z(level) * std).double().mean()) if n else None
    out[f"{prefix}width_95"] = _json_float((2.0 * gaussian_z(0.95) * std).mean()) if n else None
    var = std.square().clamp_min(torch.finfo(torch.float64).tiny)
    nll = 0.5 * (torch.log(2 * math.pi * var) + error.square() / var)
    out[f"{prefix}nll"] = _json_float(nll.mean()) if n else None
    out[f"{prefix}rmse"] = _json_float(error.square().mean().sqrt()) if n else None
    out[f"{prefix}spearman"] = spearman_correlation(mean, target)
    return out


@torch.no_grad()
def calibration_metrics(
    surrogate: Any,
    features: torch.Tensor,
    rewards: torch.Tensor,
    *,
    truth: torch.Tensor | None = None,
    batch_size: int = 4096,
) -> dict[str, float | int | None]:
    """Score a fitted surrogate's uncertainty on held-out answers; a dict of JSON-friendly values.

    Rows whose reward is non-finite (failed queries) are left out and counted; rows whose
    prediction is non-finite are left out too and counted separately (a healthy surrogate
    has none). No gradient is taken.

    Keys (``None`` where undefined: no rows, or a constant vector for the rank correlation):

    * ``n``: rows scored; ``n_nonfinite_rewards``, ``n_nonfinite_predictions``: rows left out.
    * ``coverage_50``, ``coverage_80``, ``coverage_95``: fraction of rewards inside
      `mean ± z·std` with the predictive std (``posterior(features, observation_noise=True)``),
      `z = 0.674, 1.282, 1.960` (central Gaussian intervals).
    * ``width_95``: mean full width `2·1.960·std` of the predictive 95% interval.
    * ``nll``: mean Gaussian negative log-likelihood `½ log(2πσ²) + (r − μ)²/(2σ²)` of the
      rewards under the predictive distribution (natural log, reward units).
    * ``rmse``: root mean squared error of the mean against the rewards.
    * ``spearman``: Spearman rank correlation between mean and reward (ties averaged).
    * With ``truth``: ``truth_coverage_50/80/95``, ``truth_width_95``, ``truth_nll`` and
      ``truth_rmse``, the same against the noise-free values with the epistemic std
      (``posterior(features)``); ``truth_spearman``; ``n_truth`` rows (finite reward, truth
      and prediction).

    Args:
        surrogate: A fitted surrogate (anything with ``posterior(features, observation_noise=...)``
            returning `(mean, std)`; its ``device`` attribute, if any, receives the features).
        features: Held-out features `(N, D)`.
        rewards: Observed (noisy) rewards `(N,)`.
        truth: Optional noise-free values `(N,)` (benchmarks with a known function).
        batch_size: Rows per posterior call (bounds memory).

    Returns:
        Name -> float, int or ``None``.

    Raises:
        ValueError: For features that are not `(N, D)`, or rewards / truth of another length.
    """
    rewards, truth = _heldout_targets(features, rewards, truth)
    finite_reward = torch.isfinite(rewards)
    rows = torch.nonzero(finite_reward).reshape(-1)
    mean, std, pred_std = _predict_rows(surrogate, features, rows, max(int(batch_size), 1))
    valid = torch.isfinite(mean) & torch.isfinite(pred_std) & (pred_std >= 0)
    out: dict[str, float | int | None] = {
        "n": int(valid.sum()),
        "n_nonfinite_rewards": int((~finite_reward).sum()),
        "n_nonfinite_predictions": int((~valid).sum()),
    }
    out.update(_interval_metrics(mean[valid], pred_std[valid], rewards[rows][valid], "", CALIBRATION_LEVELS))
    if truth is not None:
        keep = valid & torch.isfinite(truth[rows]) & torch.isfinite(std) & (std >= 0)
        out["n_truth"] = int(keep.sum())
        out.update(_interval_metrics(mean[keep], std[keep], truth[rows][keep], "truth_", CALIBRATION_LEVELS))
    return out


def _heldout_targets(
    features: torch.Tensor, rewards: torch.Tensor, truth: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Check the held-out shapes; return the rewards and the truth as flat float64 CPU tensors."""
    if features.ndim != 2:
        raise ValueError(f"Expected held-out features of shape (N, D), got {tuple(features.shape)}.")
    n_rows = features.shape[0]
    rewards = torch.as_tensor(rewards).detach().reshape(-1).double().cpu()
    if rewards.shape[0] != n_rows:
        raise ValueError(f"Got {n_rows} feature rows but {rewards.shape[0]} rewards.")
    if truth is not None:
        truth = torch.as_tensor(truth).detach().reshape(-1).double().cpu()
        if truth.shape[0] != n_rows:
            raise ValueError(f"Got {n_rows} feature rows but {truth.shape[0]} true values.")
    return rewards, truth


def _predict_rows(
    surrogate: Any, features: torch.Tensor, rows: torch.Tensor, batch_size: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mean, epistemic std and predictive std `(n,)` (float64, CPU) at ``features[rows]``, in batches."""
    device = getattr(surrogate, "device", features.device)
    means, stds, pred_stds = [], [], []
    for start in range(0, rows.shape[0], batch_size):
        chunk = features[rows[start : start + batch_size].to(features.device)].to(device)
        mean, std = surrogate.posterior(chunk)
        _, pred_std = surrogate.posterior(chunk, observation_noise=True)
        means.append(mean.detach().double().cpu().reshape(-1))
        stds.append(std.detach().double().cpu().reshape(-1))
        pred_stds.append(pred_std.detach().double().cpu().reshape(-1))
    empty = torch.zeros(0, dtype=torch.float64)
    return tuple(torch.cat(parts) if parts else empty for parts in (means, stds, pred_stds))


def heldout_variance_split(
    residuals: torch.Tensor,
    *,
    prior_var: float,
    noise_var: float | None,
    prior_weight: float = PRIOR_WEIGHT,
) -> dict[str, float | int | None]:
    """Split the held-out error variance into the model's (epistemic) part and the label noise.

    `E = (Σ r_i² + w₀·v₀) / (n + w₀)` is the mean squared held-out residual shrunk towards the
    prior variance `v₀` (the reward variance: what a surrogate that knows nothing errs by) with
    `w₀` pseudo-points; with no held-out rows it is `v₀`. The epistemic variance is
    `V = max(E − σ_n², 0.01·E)` with `σ_n² = noise_var` when the label noise is known, and
    `V = E` when it is not (``noise_var=None``: the held-out residuals alone cannot tell noise
    from model error, so all of it is attributed to the model; conservative). Everything is in
    the caller's units (the MLPs use standardized rewards).

    Args:
        residuals: Held-out residuals `(n,)` (prediction − observed reward), `n >= 0`.
        prior_var: Prior variance `v₀ >= 0`.
        noise_var: Known label-noise variance, or ``None`` when unknown.
        prior_weight: Pseudo-points `w₀`.

    Returns:
        ``n_heldout``, ``heldout_mse`` (``None`` for no rows), ``error_var`` `E`, ``epistemic_var``
        `V` and ``noise_var`` (the known one, at least :data:`UNKNOWN_NOISE_FRACTION`·`E`, which is
        also what an unknown noise records); `E` and `V` are floored at `1e-12` so that the scales
        derived from them stay positive.
    """
    r2 = residuals.detach().double().reshape(-1).square()
    n = int(r2.shape[0])
    total = float(r2.sum()) + prior_weight * float(prior_var)
    error_var = max(total / (n + prior_weight) if n + prior_weight > 0 else float(prior_var), 1e-12)
    if noise_var is None:
        epistemic_var, noise = error_var, UNKNOWN_NOISE_FRACTION * error_var
    else:
        noise = max(float(noise_var), UNKNOWN_NOISE_FRACTION * error_var)  # a positive scale, even for 0
        epistemic_var = max(error_var - noise, MIN_EPISTEMIC_FRACTION * error_var)
    return {
        "n_heldout": n,
        "heldout_mse": float(r2.mean()) if n else None,
        "error_var": error_var,
        "epistemic_var": max(epistemic_var, 1e-12),
        "noise_var": noise,
    }


__all__ = [
    "CALIBRATION_LEVELS",
    "MIN_EPISTEMIC_FRACTION",
    "PRIOR_WEIGHT",
    "UNKNOWN_NOISE_FRACTION",
    "average_ranks",
    "calibration_metrics",
    "gaussian_z",
    "heldout_variance_split",
    "spearman_correlation",
]
