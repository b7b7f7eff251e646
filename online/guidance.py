"""The surrogate as the sampler's reward: featurize the decoded image, score the features.

This is the only place where a surrogate meets the sampler: ``das`` sees a plain
differentiable reward, ``surrogate`` sees feature vectors.
"""

from __future__ import annotations

from typing import Sequence

import torch

GUIDANCE_MODES = ("optimistic", "mean")


class SurrogateReward:
    """``r(x) = surrogate.optimistic(φ(x))`` (or its mean) on images; differentiable.

    Args:
        featurizer: frozen, differentiable ``images -> (N, D)``.
        surrogate: a fitted surrogate over `D`-dimensional features.
        mode: ``"optimistic"`` (mean + bonus, used while exploring) or ``"mean"`` (greedy,
            used for evaluation).
    """

    differentiable = True

    def __init__(self, featurizer, surrogate, mode: str = "optimistic"):
        if mode not in GUIDANCE_MODES:
            raise ValueError(f"Unknown guidance mode {mode!r}; choose one of: {', '.join(GUIDANCE_MODES)}.")
        self.featurizer, self.surrogate, self.mode = featurizer, surrogate, mode

    def __call__(self, images: torch.Tensor, prompts: Sequence[str] | None = None) -> torch.Tensor:
        features = self.featurizer(images)
        score = self.surrogate.optimistic(features) if self.mode == "optimistic" else self.surrogate.mean(features)
        return score.reshape(-1).float()


class ZeroReward:
    """The reward of round 0: pretrained sampling (no gradient, uniform weights)."""

    differentiable = False

    def __call__(self, images: torch.Tensor, prompts: Sequence[str] | None = None) -> torch.Tensor:
        return torch.zeros(images.shape[0], device=images.device)
