"""The reward seam: a callable from images to one score per image.

A reward maps images as floats in [0, 1], shape `(N, C, H, W)` (or `(N, d)` vectors for the
analytic toys), and optionally one prompt per image, to a `(N,)` tensor. Its
``differentiable`` attribute tells the sampler whether it may take the reward's gradient:
when it is ``False`` the sampler proposes from the pretrained transition and uses the reward
only in the importance weights.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

import torch


@runtime_checkable
class Reward(Protocol):
    """A scalar score per image."""

    differentiable: bool

    def __call__(self, images: torch.Tensor, prompts: Sequence[str] | None = None) -> torch.Tensor:
        """Scores `images` `(N, ...)`; returns `(N,)`."""


class FunctionReward:
    """Wraps a plain function ``images -> (N,)`` (prompts ignored) as a :class:`Reward`.

    Args:
        fn: the scoring function.
        differentiable: whether `fn` keeps the autograd graph.
        name: a name for logs.
    """

    def __init__(
        self, fn: Callable[[torch.Tensor], torch.Tensor], differentiable: bool = True, name: str = "function"
    ):
        self.fn = fn
        self.differentiable = differentiable
        self.name = name

    def __call__(self, images: torch.Tensor, prompts: Sequence[str] | None = None) -> torch.Tensor:
        return self.fn(images)

    def __repr__(self) -> str:
        return f"FunctionReward({self.name}, differentiable={self.differentiable})"


class WeightedSum:
    """A weighted sum of rewards, itself a reward.

    Differentiable only when every term is; the paper's multi-objective reward is
    ``WeightedSum([aesthetic, clip], [w, (1 - w) * 20])``.

    Args:
        rewards: the terms.
        weights: one float per term.
    """

    def __init__(self, rewards: Sequence[Reward], weights: Sequence[float]):
        if len(rewards) != len(weights) or not rewards:
            raise ValueError(
                f"WeightedSum needs one weight per reward, got {len(rewards)} rewards and {len(weights)} weights."
            )
        self.rewards = list(rewards)
        self.weights = [float(w) for w in weights]
        self.differentiable = all(getattr(r, "differentiable", False) for r in self.rewards)

    def __call__(self, images: torch.Tensor, prompts: Sequence[str] | None = None) -> torch.Tensor:
        total = None
        for reward, weight in zip(self.rewards, self.weights):
            term = weight * reward(images, prompts)
            total = term if total is None else total + term
        return total

    def __repr__(self) -> str:
        terms = " + ".join(f"{w:g}*{r!r}" for r, w in zip(self.rewards, self.weights))
        return f"WeightedSum({terms})"
