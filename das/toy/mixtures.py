"""Analytic toy problems: Gaussian-mixture priors with exact scores, and exact tilted targets.

A Gaussian mixture with diagonal covariances stays a Gaussian mixture under the forward
noising ``x_t = sqrt(ᾱ) x_0 + sqrt(1 − ᾱ) ε``, so its noise prediction
``ε(x_t) = −sqrt(1 − ᾱ) ∇ log p_t(x_t)`` is exact at every noise level, in any dimension.
That makes the DDIM/DDPM chain on it a diffusion model with no learned error, and the
reward-tilted target ``p_tar ∝ p_0 · exp(r/α)`` has an exact answer:

* in closed form for quadratic rewards ``r(x) = −½ Σ_j p_j (x_j − c_j)²`` (the tilt of a
  Gaussian mixture is again a Gaussian mixture), and
* on a fine grid for any reward in 2-D.

The DAS paper's two settings are :func:`nine_gaussians` (grid {−4, 0, 4}², covariance
0.3·I, reward ``−x²/100 − y²``, α = 1) and :func:`eight_gaussians` (a circle of radius 4).
Sample sets are compared with :func:`emd`, the earth mover's distance the paper reports.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class GaussianMixture:
    """A mixture of Gaussians with diagonal covariances.

    Attributes:
        means: `(M, d)` component means.
        variances: `(M, d)` per-dimension variances.
        log_weights: `(M,)` log mixture weights (normalized on use).
    """

    means: torch.Tensor
    variances: torch.Tensor
    log_weights: torch.Tensor

    @property
    def dim(self) -> int:
        return self.means.shape[-1]

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> GaussianMixture:
        return GaussianMixture(
            *(t.to(device=device, dtype=dtype) for t in (self.means, self.variances, self.log_weights))
        )

    def _noisy_parameters(self, alpha_bar: torch.Tensor | float) -> tuple[torch.Tensor, torch.Tensor]:
        alpha_bar = torch.as_tensor(alpha_bar, dtype=self.means.dtype, device=self.means.device)
        return alpha_bar.sqrt() * self.means, alpha_bar * self.variances + (1.0 - alpha_bar)

    def log_prob(self, x: torch.Tensor, alpha_bar: torch.Tensor | float = 1.0) -> torch.Tensor:
        """Log-density of the noised marginal ``p_t`` at `x` `(N, d)`; returns `(N,)`."""
        means, variances = self._noisy_parameters(alpha_bar)
        diff = x.unsqueeze(1) - means  # (N, M, d)
        comp = -0.5 * ((diff**2) / variances + torch.log(2 * math.pi * variances)).sum(-1)
        log_w = self.log_weights - torch.logsumexp(self.log_weights, 0)
        return torch.logsumexp(comp + log_w, dim=1)

    def noise_prediction(self, x: torch.Tensor, alpha_bar: torch.Tensor | float) -> torch.Tensor:
        """Exact ``ε(x_t) = −sqrt(1 − ᾱ) ∇ log p_t(x_t)`` for `x` `(N, d)`; differentiable."""
        means, variances = self._noisy_parameters(alpha_bar)
        diff = x.unsqueeze(1) - means  # (N, M, d)
        comp = -0.5 * ((diff**2) / variances + torch.log(variances)).sum(-1)
        resp = torch.softmax(comp + self.log_weights, dim=1)  # (N, M)
        neg_score = (resp.unsqueeze(-1) * diff / variances).sum(1)
        alpha_bar = torch.as_tensor(alpha_bar, dtype=x.dtype, device=x.device)
        return (1.0 - alpha_bar).sqrt() * neg_score

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Draws `(n, d)` exact samples."""
        probs = torch.softmax(self.log_weights.double(), 0)
        comp = torch.multinomial(probs, n, replacement=True, generator=generator).to(self.means.device)
        noise = torch.randn(
            n,
            self.dim,
            generator=generator,
            dtype=self.means.dtype,
            device=generator.device if generator is not None else self.means.device,
        )
        return self.means[comp] + self.variances[comp].sqrt() * noise.to(self.means.device)


def _isotropic(means: torch.Tensor, variance: float) -> GaussianMixture:
    m = means.shape[0]
    return GaussianMixture(means, torch.full_like(means, variance), torch.zeros(m, dtype=means.dtype))


def nine_gaussians(variance: float = 0.3, dtype: torch.dtype = torch.float64) -> GaussianMixture:
    """Nine equal Gaussians on the grid {−4, 0, 4}², covariance ``variance · I`` (DAS paper)."""
    axis = torch.tensor([-4.0, 0.0, 4.0], dtype=dtype)
    means = torch.cartesian_prod(axis, axis)
    return _isotropic(means, variance)


def eight_gaussians(radius: float = 4.0, variance: float = 0.3, dtype: torch.dtype = torch.float64) -> GaussianMixture:
    """Eight equal Gaussians evenly spaced on a circle of `radius` (DAS paper)."""
    angles = torch.arange(8, dtype=dtype) * (2 * math.pi / 8)
    means = radius * torch.stack([angles.cos(), angles.sin()], dim=-1)
    return _isotropic(means, variance)


class QuadraticReward:
    """``r(x) = −½ Σ_j p_j (x_j − c_j)²`` on vectors `(N, d)`; differentiable.

    The DAS paper's toy reward ``−x²/100 − y²`` is ``QuadraticReward([0.02, 2.0])``.

    Args:
        precision: `(d,)` the ``p_j ≥ 0``.
        center: `(d,)` the ``c_j`` (zeros by default).
    """

    differentiable = True

    def __init__(self, precision, center=None):
        self.precision = torch.as_tensor(precision, dtype=torch.float64)
        self.center = (
            torch.zeros_like(self.precision) if center is None else torch.as_tensor(center, dtype=torch.float64)
        )
        if (self.precision < 0).any():
            raise ValueError("QuadraticReward needs non-negative precisions.")

    def __call__(self, x: torch.Tensor, prompts=None) -> torch.Tensor:
        p = self.precision.to(x.device, x.dtype)
        c = self.center.to(x.device, x.dtype)
        return -0.5 * (p * (x - c) ** 2).sum(-1)


def paper_toy_reward() -> QuadraticReward:
    """The DAS paper's 2-D toy reward ``−x²/100 − y²``."""
    return QuadraticReward([2.0 / 100.0, 2.0])


def tilt_quadratic(prior: GaussianMixture, reward: QuadraticReward, alpha: float) -> tuple[GaussianMixture, float]:
    """Exact ``p_tar ∝ p_0 · exp(r/α)`` for a quadratic reward, and ``log E_{p_0}[exp(r/α)]``.

    Each component ``N(μ, diag(s²))`` times ``exp(−½ q (x − c)²)`` with ``q = p/α`` is, per
    dimension, a Gaussian of variance ``s² / (1 + q s²)`` and mean
    ``(μ + q s² c) / (1 + q s²)``, scaled by ``(1 + q s²)^(−½) exp(−q (μ − c)² / (2 (1 + q s²)))``.

    Returns:
        The tilted mixture and the log-normalizer.
    """
    q = (reward.precision / alpha).to(prior.means)
    c = reward.center.to(prior.means)
    s2 = prior.variances
    denom = 1.0 + q * s2
    means = (prior.means + q * s2 * c) / denom
    variances = s2 / denom
    log_scale = (-0.5 * torch.log(denom) - q * (prior.means - c) ** 2 / (2.0 * denom)).sum(-1)
    log_w = prior.log_weights - torch.logsumexp(prior.log_weights, 0)
    new_log_w = log_w + log_scale
    log_normalizer = float(torch.logsumexp(new_log_w, 0))
    return GaussianMixture(means, variances, new_log_w - log_normalizer), log_normalizer


def sample_tilted_on_grid(
    prior: GaussianMixture,
    reward: Callable[[torch.Tensor], torch.Tensor],
    alpha: float,
    n: int,
    generator: torch.Generator,
    extent: float = 8.0,
    resolution: int = 800,
) -> torch.Tensor:
    """Samples a 2-D tilted target ``p_0 · exp(r/α)`` exactly up to the grid's resolution.

    The density is evaluated at the centres of a ``resolution²`` grid over
    ``[−extent, extent]²``; cells are drawn by mass and a point uniformly within the cell.

    Returns:
        `(n, 2)` samples.
    """
    if prior.dim != 2:
        raise ValueError(f"Grid tilting is for 2-D priors; this one has dimension {prior.dim}.")
    width = 2 * extent / resolution
    centres = -extent + width * (torch.arange(resolution, dtype=torch.float64) + 0.5)
    grid = torch.cartesian_prod(centres, centres)
    log_density = prior.to(dtype=torch.float64).log_prob(grid) + reward(grid) / alpha
    probs = torch.softmax(log_density, 0)
    cells = torch.multinomial(probs.float(), n, replacement=True, generator=generator)
    jitter = (torch.rand(n, 2, generator=generator, dtype=torch.float64) - 0.5) * width
    return grid[cells] + jitter


def emd(a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor) -> float:
    """Earth mover's distance (Euclidean ground cost) between two equal-size sample sets.

    For two sets of ``n`` equally weighted points the optimal transport plan is a
    permutation (Birkhoff–von Neumann), so the value equals
    ``scipy.stats.wasserstein_distance_nd(a, b)`` while an assignment solver computes it in
    a fraction of the time (0.05 s instead of about 50 s for 500 vs 500 points here).
    """
    from scipy.optimize import linear_sum_assignment
    from scipy.spatial.distance import cdist

    a = np.asarray(a.detach().cpu() if isinstance(a, torch.Tensor) else a, dtype=np.float64)
    b = np.asarray(b.detach().cpu() if isinstance(b, torch.Tensor) else b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"emd needs sample sets of the same shape, got {a.shape} and {b.shape}.")
    cost = cdist(a, b)
    rows, cols = linear_sum_assignment(cost)
    return float(cost[rows, cols].mean())
