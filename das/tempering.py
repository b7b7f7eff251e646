"""Tempering schedules: the twist's weight ``λ ∈ [0, 1]`` along the denoising chain.

The SMC core asks a schedule for ``λ_j`` of every prompt, the weight of the twist at the
particles that have taken ``j`` of the chain's ``n`` transitions: ``λ_0`` at ``x_T``, then
``λ_{i+1}`` before proposing transition ``i`` (it shifts that proposal and twists its
result). The call is ``schedule(info) -> (B,)`` with ``j = info.index``; ``info`` (a
:class:`TemperingInfo`) carries what the adaptive rules need about the current particles.
The final twist always uses ``λ_n = 1`` (the exact target), whatever the schedule says.

Every schedule is a :class:`TemperingSchedule`; subclasses register under a name
(``class MySchedule(TemperingSchedule, name="mine")``) in :data:`TEMPERINGS`, which
:func:`make_tempering` reads. Any callable ``info -> λ`` works as a schedule too.

Schedules, with ``s`` the start index (``λ_j = 0`` for ``j ≤ s`` except ``none``):
    * ``none``: ``λ_j = 1`` for every ``j`` (no tempering).
    * ``polynomial``: ``λ_j = min(max(j − s, 0) / max(n − s, 1), 1)^p``.
    * ``exponential``: ``λ_j = min((1 + γ)^max(j − s, 0) − 1, 1)`` (the DAS default, γ = 0.008).
    * ``adaptive``: per prompt, the largest ``λ_j`` in ``[λ_{j-1}, 1]`` whose importance
      weights keep ``ESS ≥ threshold · K``; when even ``λ_{j-1}`` is below the target, ``λ_j``
      stays at ``λ_{j-1}``. Found by bisection, vectorized over prompts.
    * ``grad_norm_ratio``: the largest ``λ_j`` whose guidance shift ``σ_t² λ_j ‖∇r/α‖`` is at
      most ``ratio`` times the pretrained step ``‖μ_pre − x_t‖`` (each a mean over a prompt's
      particles), never decreasing, capped at 1.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import torch

from das.resampling import effective_sample_size


@dataclass
class TemperingInfo:
    """What a schedule may look at when choosing the next ``λ``.

    Attributes:
        index: ``j``, the index of the ``λ`` asked for: it twists the particles after ``j``
            of the chain's transitions (0 at ``x_T``; ``i + 1`` when transition ``i`` is about
            to be proposed).
        num_steps: ``n``, the number of transitions in the chain.
        lam: current ``λ_{j-1}`` per prompt, `(B,)` (zeros for ``j = 0``).
        log_weights: current log-weights, `(B, K)`.
        reward_over_alpha: ``r(x̂0(x_t)) / α`` at the current particles, `(B, K)`.
        guidance_norm: ``σ_t² ‖∇ r / α‖`` per particle, `(B, K)`, or None.
        drift_norm: ``‖μ_pre − x_t‖`` per particle, `(B, K)`, or None.
    """

    index: int
    num_steps: int
    lam: torch.Tensor
    log_weights: torch.Tensor
    reward_over_alpha: torch.Tensor
    guidance_norm: torch.Tensor | None = None
    drift_norm: torch.Tensor | None = None


Schedule = Callable[[TemperingInfo], torch.Tensor]

TEMPERINGS: dict[str, type[TemperingSchedule]] = {}
"""Schedule name → class, filled by :class:`TemperingSchedule`'s subclasses."""


class TemperingSchedule(ABC):
    """A tempering schedule: ``schedule(info) -> λ_j``, `(B,)`, each in ``[0, 1]``.

    Subclasses pass ``name=...`` in their class statement to register in :data:`TEMPERINGS`.

    Attributes:
        name: the registered name.
        needs_gradient_norms: whether the sampler must fill ``info.guidance_norm`` and
            ``info.drift_norm`` (work it skips otherwise).
        sampler_options: which of the shared tempering options (``start``, ``gamma``,
            ``ess_threshold``; :func:`tempering_from_options`) the constructor takes.
    """

    name: ClassVar[str]
    needs_gradient_norms: ClassVar[bool] = False
    sampler_options: ClassVar[tuple[str, ...]] = ("start",)

    def __init_subclass__(cls, name: str | None = None, **kwargs):
        super().__init_subclass__(**kwargs)
        if name is not None:
            cls.name = name
            TEMPERINGS[name] = cls

    @abstractmethod
    def __call__(self, info: TemperingInfo) -> torch.Tensor:
        """``λ_j`` per prompt, `(B,)`, for ``j = info.index``."""


def _full(info: TemperingInfo, value: float) -> torch.Tensor:
    return torch.full_like(info.lam, float(value))


def _positive(value: float, schedule: str, name: str) -> float:
    """`value` as a float; ``ValueError`` ("<schedule> needs <name> > 0, got ...") unless it is positive."""
    if value <= 0:
        raise ValueError(f"{schedule} needs {name} > 0, got {value}.")
    return float(value)


class NoTempering(TemperingSchedule, name="none"):
    """``λ_j = 1`` for every ``j``."""

    sampler_options = ()

    def __call__(self, info: TemperingInfo) -> torch.Tensor:
        return _full(info, 1.0)


class PolynomialTempering(TemperingSchedule, name="polynomial"):
    """``λ_j = min(max(j − s, 0) / max(n − s, 1), 1)^p``: 0 up to ``j = s``, 1 from ``j = n``.

    Args:
        power: the exponent ``p`` (1 is linear).
        start: the start index ``s``.
    """

    def __init__(self, power: float = 1.0, start: int = 0):
        self.power = _positive(power, "Polynomial tempering", "power")
        self.start = int(start)

    def __call__(self, info: TemperingInfo) -> torch.Tensor:
        span = max(info.num_steps - self.start, 1)
        progress = min(max(info.index - self.start, 0) / span, 1.0)
        return _full(info, progress**self.power)


class ExponentialTempering(TemperingSchedule, name="exponential"):
    """``λ_j = min((1 + γ)^max(j − s, 0) − 1, 1)``: 0 up to ``j = s`` (DAS default).

    Args:
        gamma: growth rate γ (0.008 in the reference).
        start: the start index ``s`` (``tempering_start``).
    """

    sampler_options = ("gamma", "start")

    def __init__(self, gamma: float = 0.008, start: int = 0):
        self.gamma = _positive(gamma, "Exponential tempering", "gamma")
        self.start = int(start)

    def __call__(self, info: TemperingInfo) -> torch.Tensor:
        exponent = max(info.index - self.start, 0)
        return _full(info, min((1.0 + self.gamma) ** exponent - 1.0, 1.0))


class AdaptiveTempering(TemperingSchedule, name="adaptive"):
    """Per prompt, the largest ``λ' ∈ [λ, 1]`` keeping ``ESS(w · exp((λ' − λ) r/α)) ≥ τ K``; 0 for ``j ≤ s``.

    ``λ`` is the current ``λ_{j-1}``; see :func:`solve_adaptive_lambda`.

    Args:
        ess_threshold: τ in (0, 1].
        iterations: bisection steps (the bracket shrinks by 2^-iterations).
        start: the start index ``s``.
    """

    sampler_options = ("ess_threshold", "start")

    def __init__(self, ess_threshold: float = 0.5, iterations: int = 30, start: int = 0):
        if not 0.0 < ess_threshold <= 1.0:
            raise ValueError(f"Adaptive tempering needs 0 < ess_threshold <= 1, got {ess_threshold}.")
        self.ess_threshold = float(ess_threshold)
        self.iterations = int(iterations)
        self.start = int(start)

    def __call__(self, info: TemperingInfo) -> torch.Tensor:
        if info.index <= self.start:
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


class GradNormRatioTempering(TemperingSchedule, name="grad_norm_ratio"):
    """Caps the guidance shift at a fixed ratio of the pretrained step; 0 for ``j ≤ s``.

    ``λ_j = max(min(ratio · mean_k ‖μ_pre − x_t‖ / max(mean_k σ_t² ‖∇r/α‖, 10⁻¹²), 1), λ_{j-1})``
    per prompt; ``λ_{j-1}`` when the sampler gives no gradient norms (a gradient-free reward).

    Args:
        ratio: the allowed size of the reward shift relative to the pretrained step.
        start: the start index ``s``.
    """

    needs_gradient_norms = True

    def __init__(self, ratio: float = 0.5, start: int = 0):
        self.ratio = _positive(ratio, "Gradient-norm-ratio tempering", "ratio")
        self.start = int(start)

    def __call__(self, info: TemperingInfo) -> torch.Tensor:
        if info.index <= self.start:
            return torch.zeros_like(info.lam)
        if info.guidance_norm is None or info.drift_norm is None:
            return info.lam.clone()
        guidance = info.guidance_norm.mean(dim=-1)
        drift = info.drift_norm.mean(dim=-1)
        cap = self.ratio * drift / guidance.clamp_min(1e-12)
        return torch.maximum(cap.clamp(max=1.0), info.lam)


def tempering_class(name: str) -> type[TemperingSchedule]:
    """The schedule class registered as `name`.

    Raises:
        ValueError: for an unknown name, listing the valid ones.
    """
    if name not in TEMPERINGS:
        raise ValueError(f"Unknown tempering schedule {name!r}; choose one of: {', '.join(sorted(TEMPERINGS))}.")
    return TEMPERINGS[name]


def make_tempering(name: str, **kwargs) -> TemperingSchedule:
    """Builds a schedule by name with its keyword arguments.

    Raises:
        ValueError: for an unknown name, listing the valid ones.
    """
    return tempering_class(name)(**kwargs)


def tempering_from_options(name: str, **options) -> TemperingSchedule:
    """Builds schedule `name` from the shared options (a config's), passing it those in its ``sampler_options``."""
    cls = tempering_class(name)
    return cls(**{key: value for key, value in options.items() if key in cls.sampler_options})
