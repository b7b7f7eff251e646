"""Tempering schedules: the twist's weight ``λ ∈ [0, 1]`` along the denoising chain.

The SMC core asks a schedule, before each proposal, for the next ``λ`` of every prompt:
``schedule(info) -> (B,)``. ``info`` (a :class:`TemperingInfo`) carries what the adaptive
rules need about the current particles. The final step always uses ``λ = 1`` (the exact
target), whatever the schedule says.

Schedules:
    * ``none``: ``λ = 1`` from the first step (no tempering).
    * ``polynomial``: ``λ_i = ((i - s) / (n - s))^p`` after the start step ``s``.
    * ``exponential``: ``λ_i = min((1 + γ)^(i - s) − 1, 1)`` (the DAS default, γ = 0.008).
    * ``adaptive``: per prompt, the largest ``λ`` in ``[λ_prev, 1]`` whose importance
      weights keep ``ESS ≥ threshold · K``; when even ``λ_prev`` is below the target, ``λ``
      stays at ``λ_prev``. Found by bisection, vectorized over prompts.
    * ``grad_norm_ratio``: the largest ``λ`` whose guidance shift ``σ_t² λ ‖∇r/α‖`` is at
      most ``ratio`` times the pretrained step ``‖μ_pre − x_t‖`` (mean over a prompt's
      particles), never decreasing, capped at 1.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from das.resampling import effective_sample_size


@dataclass
class TemperingInfo:
    """What a schedule may look at when choosing the next ``λ``.

    Attributes:
        step: index of the transition about to be proposed (0 is the noisiest).
        num_steps: number of transitions in the chain.
        lam: current ``λ`` per prompt, `(B,)`.
        log_weights: current log-weights, `(B, K)`.
        reward_over_alpha: ``r(x̂0(x_t)) / α`` at the current particles, `(B, K)`.
        guidance_norm: ``σ_t² ‖∇ r / α‖`` per particle, `(B, K)`, or None.
        drift_norm: ``‖μ_pre − x_t‖`` per particle, `(B, K)`, or None.
    """

    step: int
    num_steps: int
    lam: torch.Tensor
    log_weights: torch.Tensor
    reward_over_alpha: torch.Tensor
    guidance_norm: torch.Tensor | None = None
    drift_norm: torch.Tensor | None = None


Schedule = Callable[[TemperingInfo], torch.Tensor]


def _full(info: TemperingInfo, value: float) -> torch.Tensor:
    return torch.full_like(info.lam, float(value))


class NoTempering:
    """``λ = 1`` at every step."""

    needs_gradient_norms = False

    def __call__(self, info: TemperingInfo) -> torch.Tensor:
        return _full(info, 1.0)


class PolynomialTempering:
    """``λ_i = ((i + 1 - s) / (n - s))^power`` for steps ``i ≥ s``, 0 before.

    Args:
        power: the exponent ``p`` (1 is linear).
        start: the step ``s`` before which ``λ = 0``.
    """

    needs_gradient_norms = False

    def __init__(self, power: float = 1.0, start: int = 0):
        if power <= 0:
            raise ValueError(f"Polynomial tempering needs power > 0, got {power}.")
        self.power = float(power)
        self.start = int(start)

    def __call__(self, info: TemperingInfo) -> torch.Tensor:
        span = max(info.num_steps - self.start, 1)
        progress = min(max(info.step + 1 - self.start, 0) / span, 1.0)
        return _full(info, progress**self.power)


class ExponentialTempering:
    """``λ_i = min((1 + γ)^(i + 1 − s) − 1, 1)`` for steps ``i ≥ s``, 0 before (DAS default).

    Args:
        gamma: growth rate γ (0.008 in the reference).
        start: the step ``s`` before which ``λ = 0`` (``tempering_start``).
    """

    needs_gradient_norms = False

    def __init__(self, gamma: float = 0.008, start: int = 0):
        if gamma <= 0:
            raise ValueError(f"Exponential tempering needs gamma > 0, got {gamma}.")
        self.gamma = float(gamma)
        self.start = int(start)

    def __call__(self, info: TemperingInfo) -> torch.Tensor:
        exponent = max(info.step + 1 - self.start, 0)
        return _full(info, min((1.0 + self.gamma) ** exponent - 1.0, 1.0))


class AdaptiveTempering:
    """Per prompt, the largest ``λ' ∈ [λ, 1]`` keeping ``ESS(w · exp((λ' − λ) r/α)) ≥ τ K``.

    Args:
        ess_threshold: τ in (0, 1].
        iterations: bisection steps (the bracket shrinks by 2^-iterations).
        start: the step before which ``λ = 0``.
    """

    needs_gradient_norms = False

    def __init__(self, ess_threshold: float = 0.5, iterations: int = 30, start: int = 0):
        if not 0.0 < ess_threshold <= 1.0:
            raise ValueError(f"Adaptive tempering needs 0 < ess_threshold <= 1, got {ess_threshold}.")
        self.ess_threshold = float(ess_threshold)
        self.iterations = int(iterations)
        self.start = int(start)

    def __call__(self, info: TemperingInfo) -> torch.Tensor:
        if info.step < self.start:
            return torch.zeros_like(info.lam)
        return solve_adaptive_lambda(
            info.log_weights, info.reward_over_alpha, info.lam, self.ess_threshold, self.iterations
        )


def solve_adaptive_lambda(
    log_weights: torch.Tensor,
    reward_over_alpha: torch.Tensor,
    lam: torch.Tensor,
    ess_threshold: float,
    iterations: int = 30,
) -> torch.Tensor:
    """Bisection for the largest ``λ' ∈ [λ, 1]`` with ``ESS ≥ τ K``, vectorized over rows.

    Args:
        log_weights: `(B, K)` current log-weights.
        reward_over_alpha: `(B, K)` ``r / α`` at the particles.
        lam: `(B,)` current ``λ``.
        ess_threshold: τ.
        iterations: number of halvings.

    Returns:
        `(B,)` the new ``λ``. Equal to 1 where ``λ' = 1`` already meets the target, equal to
        ``λ`` where even no increase does.
    """
    k = log_weights.shape[-1]
    target = ess_threshold * k
    lam = lam.to(log_weights.dtype)

    def ess_at(candidate: torch.Tensor) -> torch.Tensor:
        return effective_sample_size(log_weights + (candidate - lam).unsqueeze(-1) * reward_over_alpha)

    hi = torch.ones_like(lam)
    ok_at_one = ess_at(hi) >= target
    lo = lam.clone()
    for _ in range(iterations):
        mid = 0.5 * (lo + hi)
        ok = ess_at(mid) >= target
        lo = torch.where(ok, mid, lo)
        hi = torch.where(ok, hi, mid)
    return torch.where(ok_at_one, torch.ones_like(lam), lo)


class GradNormRatioTempering:
    """Caps the guidance shift at a fixed ratio of the pretrained step.

    ``λ' = clamp(ratio · mean_k ‖μ_pre − x_t‖ / mean_k σ_t² ‖∇r/α‖, λ, 1)`` per prompt.

    Args:
        ratio: the allowed size of the reward shift relative to the pretrained step.
        start: the step before which ``λ = 0``.
    """

    needs_gradient_norms = True

    def __init__(self, ratio: float = 0.5, start: int = 0):
        if ratio <= 0:
            raise ValueError(f"Gradient-norm-ratio tempering needs ratio > 0, got {ratio}.")
        self.ratio = float(ratio)
        self.start = int(start)

    def __call__(self, info: TemperingInfo) -> torch.Tensor:
        if info.step < self.start:
            return torch.zeros_like(info.lam)
        if info.guidance_norm is None or info.drift_norm is None:
            return info.lam.clone()
        guidance = info.guidance_norm.mean(dim=-1)
        drift = info.drift_norm.mean(dim=-1)
        cap = self.ratio * drift / guidance.clamp_min(1e-12)
        return torch.maximum(cap.clamp(max=1.0), info.lam)


TEMPERINGS = {
    "none": NoTempering,
    "polynomial": PolynomialTempering,
    "exponential": ExponentialTempering,
    "adaptive": AdaptiveTempering,
    "grad_norm_ratio": GradNormRatioTempering,
}


def make_tempering(name: str, **kwargs) -> Schedule:
    """Builds a schedule by name with its keyword arguments.

    Raises:
        ValueError: for an unknown name, listing the valid ones.
    """
    try:
        cls = TEMPERINGS[name]
    except KeyError:
        valid = ", ".join(sorted(TEMPERINGS))
        raise ValueError(f"Unknown tempering schedule {name!r}; choose one of: {valid}.") from None
    return cls(**kwargs)
