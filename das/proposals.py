"""Which reward gradient shifts DAS's proposal, and at which steps.

DAS proposes ``x_{t-1} ~ N(μ_t + σ_t² λ_{t-1} g_t / α, σ_t²)`` and weights each draw by the
exact ``log p_pre(x_{t-1}|x_t) − log q(x_{t-1}|x_t)`` of the shift it actually applied
(:class:`~das.smc.DASSampler`). Any ``g_t`` that is a function of the particle's past keeps
the target exact, so it may be cheap. :class:`GradientOptions` (a field of
:class:`~das.smc_settings.DASSettings`) picks it, and :class:`ProposalGradient` takes it on
one chain for one reward:

* ``"full"``: ``g_t = ∇_{x_t} r(decode(x̂0(x_t)))`` by autograd through the model (the
  paper's DAS);
* ``"jacobian_free"``: the model runs without autograd; the reward's gradient is taken at
  Tweedie's ``x̂0`` (through decode and the reward only) and mapped back by ``1/√ᾱ_t``,
  i.e. ``x̂0 = (x_t − √(1−ᾱ_t) ε̂)/√ᾱ_t`` differentiated with ``ε̂`` held fixed, as
  manifold-preserving / DPS-without-Jacobian guidance does;
* ``"none"``: no shift (gradient-free DAS; the reward enters the weights only).

A schedule takes the gradient only on some steps: on step ``i`` of ``T`` when
``i ≥ after · T`` and ``(T − 1 − i) % every == 0`` (counted back from the last step, so the
last transitions always get one). On the other steps the model and the reward run forward
only (the twist ``ψ_t = λ_t r(x̂0(x_t))/α`` needs the reward at every step) and the proposal
is the pretrained transition, or, with ``reuse``, shifted by the last gradient taken (carried
along with its particle through resampling).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from das.adapters.base import Conditioning, DenoiserAdapter, Transition
from das.rewards.base import Reward

GRADIENTS = ("full", "jacobian_free", "none")


def _gradient(reward: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``∇_x Σ reward``; zeros when the reward does not depend on `x`."""
    if not reward.requires_grad:
        return torch.zeros_like(x)
    (grad,) = torch.autograd.grad(reward.sum(), x, allow_unused=True)
    return torch.zeros_like(x) if grad is None else grad


def alpha_bars(adapter: DenoiserAdapter) -> list[float]:
    """``ᾱ_t`` at each chain step, read from the adapter's scheduler (``alphas_cumprod`` at its timesteps).

    Raises:
        ValueError: the adapter has no ``scheduler.alphas_cumprod`` with timesteps.
    """
    scheduler = getattr(adapter, "scheduler", None)
    cumprod = getattr(scheduler, "alphas_cumprod", None)
    timesteps = getattr(adapter, "timesteps", None)
    if timesteps is None and scheduler is not None:
        timesteps = getattr(scheduler, "timesteps", None)
    if cumprod is None or timesteps is None:
        raise ValueError(
            f"gradient='jacobian_free' needs ᾱ_t: an adapter with scheduler.alphas_cumprod and timesteps; "
            f"{type(adapter).__name__} has none (use gradient='full')."
        )
    return [float(cumprod[int(t)]) for t in list(timesteps)[: adapter.num_steps]]


@dataclass(frozen=True)
class GradientOptions:
    """Which gradient shifts DAS's proposal, and on which steps (see the module docstring).

    Args:
        kind: ``"full"``, ``"jacobian_free"``, ``"none"``, or ``"auto"`` (the default):
            ``"full"`` for a reward whose ``differentiable`` flag is set, else ``"none"``.
        every: take the gradient every this many steps (1: every step), counted back from the last.
        after: take none during the first fraction `after` of the steps, in [0, 1).
        reuse: on steps without a fresh gradient, shift by the last one taken instead of not at all.

    Raises:
        ValueError: an option is out of range.
    """

    kind: str = "auto"
    every: int = 1
    after: float = 0.0
    reuse: bool = False

    def __post_init__(self):
        if self.kind not in ("auto", *GRADIENTS):
            raise ValueError(f"Unknown gradient {self.kind!r}; choose one of: auto, {', '.join(GRADIENTS)}.")
        if isinstance(self.every, bool) or not isinstance(self.every, int) or self.every < 1:
            raise ValueError(f"GradientOptions.every must be an integer of at least 1, got {self.every!r}.")
        if not 0.0 <= self.after < 1.0:
            raise ValueError(f"GradientOptions.after must lie in [0, 1), got {self.after}.")

    def kind_for(self, reward: Reward) -> str:
        """The gradient `reward` gets: `kind`, with ``"auto"`` decided by the reward's ``differentiable`` flag.

        Raises:
            ValueError: a gradient is asked of a reward that is not differentiable.
        """
        differentiable = bool(getattr(reward, "differentiable", False))
        if self.kind == "auto":
            return "full" if differentiable else "none"
        if self.kind != "none" and not differentiable:
            raise ValueError(
                f"gradient {self.kind!r} needs a differentiable reward; this one is not (use gradient 'none' or "
                f"'auto')."
            )
        return self.kind


@dataclass(frozen=True)
class ProposalGradient:
    """The proposal's gradient for one reward on one chain: its kind and the steps that take it.

    Args:
        kind: ``"full"``, ``"jacobian_free"`` or ``"none"`` (already decided, see :meth:`GradientOptions.kind_for`).
        every: take the gradient every this many steps (1: every step).
        after: take none during the first fraction `after` of the steps, in [0, 1).
        reuse: on steps without a fresh gradient, shift by the last one taken instead of not at all.
        inverse_sqrt_alpha_bars: ``1/√ᾱ_t`` per step (``"jacobian_free"`` only); see :meth:`for_adapter`.
    """

    kind: str = "full"
    every: int = 1
    after: float = 0.0
    reuse: bool = False
    inverse_sqrt_alpha_bars: tuple[float, ...] = ()

    def __post_init__(self):
        if self.kind not in GRADIENTS:
            raise ValueError(f"Unknown gradient {self.kind!r}; choose one of: {', '.join(GRADIENTS)}.")
        GradientOptions(self.kind, self.every, self.after, self.reuse)  # the same range checks

    @classmethod
    def for_adapter(
        cls, adapter: DenoiserAdapter, kind: str = "full", every: int = 1, after: float = 0.0, reuse: bool = False
    ) -> ProposalGradient:
        """The strategy for `adapter`'s chain (reads ``ᾱ_t`` for ``"jacobian_free"``).

        Raises:
            ValueError: ``"jacobian_free"`` on an adapter without ``scheduler.alphas_cumprod`` and timesteps.
        """
        scales = ()
        if kind == "jacobian_free":
            scales = tuple(1.0 / math.sqrt(a) for a in alpha_bars(adapter))
        return cls(kind, every, after, reuse, scales)

    @property
    def uses_gradient(self) -> bool:
        """Whether any step takes a gradient."""
        return self.kind != "none"

    def takes_gradient(self, step: int, num_steps: int) -> bool:
        """Whether chain step `step` (the transition the gradient shifts) takes a fresh gradient."""
        return self.uses_gradient and step >= self.after * num_steps and (num_steps - 1 - step) % self.every == 0

    def evaluate(
        self,
        adapter: DenoiserAdapter,
        reward: Reward,
        x: torch.Tensor,
        step: int,
        cond: Conditioning,
        prompts: Sequence[str],
    ) -> tuple[Transition, torch.Tensor, torch.Tensor | None]:
        """The transition at `x` `(n, *event)`, the reward of ``decode(x̂0)`` `(n,)` and the proposal's gradient.

        The gradient is ``∇_x`` of the reward for ``"full"``, ``∇_{x̂0}`` of it over ``√ᾱ_t``
        for ``"jacobian_free"``, and None on steps that take none (the model and the reward
        then run without autograd).
        """
        x = x.detach()
        if not self.takes_gradient(step, adapter.num_steps):
            with torch.no_grad():
                transition = adapter.transition(x, step, cond)
                return transition, reward(adapter.decode(transition.x0_hat), list(prompts)), None
        if self.kind == "full":
            x = x.requires_grad_(True)
            with torch.enable_grad():
                transition = adapter.transition(x, step, cond)
                value = reward(adapter.decode(transition.x0_hat), list(prompts))
                return transition, value, _gradient(value, x)
        with torch.no_grad():
            transition = adapter.transition(x, step, cond)
        x0 = transition.x0_hat.detach().requires_grad_(True)
        with torch.enable_grad():
            value = reward(adapter.decode(x0), list(prompts))
            grad = _gradient(value, x0)
        return transition, value, grad.mul_(self.inverse_sqrt_alpha_bars[step])


__all__ = ["GRADIENTS", "GradientOptions", "ProposalGradient", "alpha_bars"]
