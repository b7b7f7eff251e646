"""The surrogate as the sampler's reward: featurize the decoded image, score the features.

This is the only place where a surrogate meets the sampler: ``das`` sees a plain
differentiable reward, ``surrogate`` sees feature vectors.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

SURROGATE_MODES = ("optimistic", "mean", "thompson")
# The loop's smc.guidance: a surrogate mode, or a reference point for comparisons:
# "none" samples the pretrained model every round; "oracle" (the ceiling) guides DAS by the
# true oracle itself, without its label noise (gradient-free when the oracle has no gradient).
GUIDANCE_MODES = SURROGATE_MODES + ("none", "oracle")
# Surrogate kinds that can draw a function from their posterior (``surrogate.thompson(generator)``).
THOMPSON_KINDS = ("ucb", "bootstrap")


class SurrogateReward:
    """``r(x) = surrogate.optimistic(φ(x))`` (or its mean) on images; differentiable.

    Args:
        featurizer: frozen, differentiable ``images -> (N, D)``.
        surrogate: a fitted surrogate over `D`-dimensional features.
        mode: ``"optimistic"`` (mean + bonus, used while exploring), ``"mean"`` (greedy,
            used for evaluation) or ``"thompson"`` (one function drawn from the surrogate's
            posterior when this reward is made: make one per prompt batch).
        generator: the source of the Thompson draw (``"thompson"`` only).
    """

    differentiable = True

    def __init__(self, featurizer, surrogate, mode: str = "optimistic", generator: torch.Generator | None = None):
        if mode not in SURROGATE_MODES:
            raise ValueError(f"Unknown surrogate guidance mode {mode!r}; choose one of: {', '.join(SURROGATE_MODES)}.")
        self.featurizer, self.surrogate, self.mode = featurizer, surrogate, mode
        if mode == "thompson":
            if not hasattr(surrogate, "thompson") or surrogate.kind not in THOMPSON_KINDS:
                raise ValueError(f"Thompson guidance needs a surrogate of kind {' or '.join(THOMPSON_KINDS)}.")
            if generator is None:
                raise ValueError("Thompson guidance needs a generator for its posterior draw.")
            self.score = surrogate.thompson(generator)
        elif mode == "optimistic":
            self.score = surrogate.optimistic
        else:
            self.score = surrogate.mean

    def __call__(self, images: torch.Tensor, prompts: Sequence[str] | None = None) -> torch.Tensor:
        return self.score(self.featurizer(images)).reshape(-1).float()


class ZeroReward:
    """The reward of round 0: pretrained sampling (no gradient, uniform weights)."""

    differentiable = False

    def __call__(self, images: torch.Tensor, prompts: Sequence[str] | None = None) -> torch.Tensor:
        return torch.zeros(images.shape[0], device=images.device)
