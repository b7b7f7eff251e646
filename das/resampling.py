"""Resampling schemes over `(prompts, particles)` log-weights, on the weights' device.

Every scheme is a pure function ``(log_weights, generator) -> ancestors`` where
`log_weights` has shape `(B, K)` (unnormalized, any finite scale) and `ancestors` is a
`(B, K)` ``long`` tensor of particle indices in ``[0, K)`` for each prompt. All schemes are
vectorized over prompts and never synchronize with the host.

Invalid weights have a documented fallback rather than an error (an error would need a host
sync on every step): NaN log-weights count as ``-inf``, and a row whose weights are all
``-inf`` (or NaN) is treated as uniform. :func:`normalize_log_weights` implements this, and
the SMC core counts such rows in its traces.

Schemes: multinomial, stratified, systematic, residual, and SSP (the Srinivasan sampling
process; Gerber, Chopin & Whiteley, 2019), whose offspring counts, like systematic's, lie in
``floor(K W) .. ceil(K W)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

Resampler = Callable[[torch.Tensor, torch.Generator | None], torch.Tensor]


def normalize_log_weights(log_weights: torch.Tensor) -> torch.Tensor:
    """Normalizes log-weights per row, with the documented fallback for invalid rows.

    Args:
        log_weights: `(B, K)` unnormalized log-weights.

    Returns:
        `(B, K)` log-weights whose exponentials sum to one per row. NaN entries count as
        ``-inf``, ``+inf`` entries share the row's mass, and rows with no finite entry
        become uniform.
    """
    return normalize_with_log_sum(log_weights)[0]


def normalize_with_log_sum(log_weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`normalize_log_weights` and the rows' ``logsumexp`` before normalizing.

    Returns:
        The normalized `(B, K)` log-weights and the `(B,)` log-sums, ``-inf`` for rows
        that had no finite weight (those rows come back uniform).
    """
    dtype = torch.promote_types(log_weights.dtype, torch.float32)
    big = torch.finfo(dtype).max / 4  # +inf becomes a finite value that dominates its row
    lw = torch.nan_to_num(log_weights.to(dtype), nan=float("-inf"), posinf=big, neginf=float("-inf"))
    log_sum = torch.logsumexp(lw, dim=-1, keepdim=True)
    alive = torch.isfinite(log_sum)
    uniform = torch.full_like(lw, -math.log(lw.shape[-1]))
    return torch.where(alive, lw - log_sum, uniform), log_sum.squeeze(-1)


def normalized_weights(log_weights: torch.Tensor) -> torch.Tensor:
    """`(B, K)` normalized weights (see :func:`normalize_log_weights`)."""
    return normalize_log_weights(log_weights).exp()


def effective_sample_size(log_weights: torch.Tensor, normalized: bool = False) -> torch.Tensor:
    """ESS ``1 / sum_k W_k^2`` per row, from `(B, K)` log-weights; returns `(B,)`.

    Pass ``normalized=True`` for log-weights already normalized per row, to skip that work.
    """
    lw = log_weights if normalized else normalize_log_weights(log_weights)
    return torch.exp(-torch.logsumexp(2.0 * lw, dim=-1))


def _uniforms(shape: tuple[int, ...], like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    return torch.rand(shape, generator=generator, device=like.device, dtype=torch.float64)


def _inverse_cdf(weights: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Indices ``i`` with ``cdf[i-1] <= u < cdf[i]`` for sorted `points` in [0, 1)."""
    cdf = torch.cumsum(weights.double(), dim=-1)
    cdf = cdf / cdf[..., -1:]  # exact 1 at the end despite rounding
    idx = torch.searchsorted(cdf, points.contiguous(), right=True)
    return idx.clamp_(max=weights.shape[-1] - 1)


def _counts_to_ancestors(counts: torch.Tensor) -> torch.Tensor:
    """Turns `(B, K)` offspring counts summing to K into sorted `(B, K)` ancestor indices."""
    k = counts.shape[-1]
    ends = torch.cumsum(counts, dim=-1)
    slots = torch.arange(k, device=counts.device).expand_as(counts).contiguous()
    return torch.searchsorted(ends, slots, right=True).clamp_(max=k - 1)


def multinomial(log_weights: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """K independent draws per row from the normalized weights."""
    w = normalized_weights(log_weights)
    return torch.multinomial(w, w.shape[-1], replacement=True, generator=generator)


def stratified(log_weights: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """One uniform draw in each of the K strata ``[k/K, (k+1)/K)``."""
    w = normalized_weights(log_weights)
    b, k = w.shape
    grid = torch.arange(k, device=w.device, dtype=torch.float64)
    return _inverse_cdf(w, (grid + _uniforms((b, k), w, generator)) / k)


def systematic(log_weights: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """One shared uniform offset per row, K evenly spaced points."""
    w = normalized_weights(log_weights)
    b, k = w.shape
    grid = torch.arange(k, device=w.device, dtype=torch.float64)
    return _inverse_cdf(w, (grid + _uniforms((b, 1), w, generator)) / k)


def residual(log_weights: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """``floor(K W)`` copies of each particle, the remainder drawn multinomially."""
    w = normalized_weights(log_weights.double())
    b, k = w.shape
    scaled = k * w
    counts = torch.floor(scaled).long()
    remaining = k - counts.sum(dim=-1, keepdim=True)  # (B, 1), in [0, K]
    frac = (scaled - counts).clamp_min(0.0)
    # Rows with no remainder get a harmless uniform distribution for the (masked) draws.
    frac = torch.where(remaining > 0, frac, torch.ones_like(frac))
    draws = torch.multinomial(frac.float(), k, replacement=True, generator=generator)
    keep = torch.arange(k, device=w.device).unsqueeze(0) < remaining
    counts = counts.scatter_add(1, draws, keep.long())
    return _counts_to_ancestors(counts)


def ssp(log_weights: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Srinivasan sampling process (Gerber, Chopin & Whiteley, 2019).

    Starts from ``floor(K W)`` offspring and resolves the fractional parts pairwise: each of
    the ``K - 1`` pair operations moves mass between the two open fractions so that one of
    them becomes 0 or 1, with probabilities that keep every expectation equal to ``K W``.
    Counts therefore stay within ``floor(K W) .. ceil(K W)``. Vectorized over rows; the loop
    runs over particles.
    """
    w = normalized_weights(log_weights.double())
    b, k = w.shape
    scaled = k * w
    counts = torch.floor(scaled)
    frac = (scaled - counts).clamp(0.0, 1.0)
    rows = torch.arange(b, device=w.device)
    u = _uniforms((b, max(k - 1, 1)), w, generator)
    i = torch.zeros(b, dtype=torch.long, device=w.device)  # the open fraction carried along
    for j in range(1, k):
        jj = torch.full_like(i, j)
        xi, xj = frac[rows, i], frac[rows, jj]
        up_i = torch.minimum(xj, 1.0 - xi)  # move mass j -> i
        up_j = torch.minimum(xi, 1.0 - xj)  # move mass i -> j
        total = up_i + up_j
        p_i = torch.where(total > 0, up_j / total.clamp_min(1e-300), torch.zeros_like(total))
        to_i = u[:, j - 1] < p_i
        new_xi = torch.where(to_i, xi + up_i, xi - up_j)
        new_xj = torch.where(to_i, xj - up_i, xj + up_j)
        frac[rows, i] = new_xi
        frac[rows, jj] = new_xj
        # Whichever of the two is now resolved (0 or 1) is settled; keep the other open.
        i_done = (new_xi <= 1e-12) | (new_xi >= 1.0 - 1e-12)
        i = torch.where(i_done, jj, i)
    counts = counts + torch.round(frac)
    # Rounding slack: the total must be exactly K; fix it on the largest fractions.
    deficit = k - counts.sum(dim=-1)
    counts = counts.long()
    order = torch.argsort(scaled - torch.floor(scaled), dim=-1, descending=True)
    fix = torch.arange(k, device=w.device).unsqueeze(0) < deficit.abs().long().unsqueeze(-1)
    delta = torch.sign(deficit).long().unsqueeze(-1) * fix.long()
    counts = counts.scatter_add(1, order, delta).clamp_min(0)
    return _counts_to_ancestors(counts)


RESAMPLERS: dict[str, Resampler] = {
    "multinomial": multinomial,
    "stratified": stratified,
    "systematic": systematic,
    "residual": residual,
    "ssp": ssp,
}


def get_resampler(name: str) -> Resampler:
    """Looks a scheme up by name.

    Raises:
        ValueError: for an unknown name, listing the valid ones.
    """
    try:
        return RESAMPLERS[name]
    except KeyError:
        valid = ", ".join(sorted(RESAMPLERS))
        raise ValueError(f"Unknown resampling scheme {name!r}; choose one of: {valid}.") from None
