"""The surrogate as the sampler's reward: featurize the decoded image, score the features by an acquisition.

This is the only place where a surrogate meets the sampler: ``das`` sees a plain
differentiable reward, ``surrogate`` sees feature vectors.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

# The loop's smc.guidance: an acquisition on the surrogate ("optimistic": the run's
# acquisition.kind; "mean": the posterior mean; "thompson": a posterior draw per sampler call),
# or a reference point for comparisons: "none" samples the pretrained model every round;
# "oracle" (the ceiling) guides DAS by the true oracle itself, without its label noise
# (gradient-free when the oracle has no gradient).
SURROGATE_GUIDANCE = ("optimistic", "mean", "thompson")
GUIDANCE_MODES = SURROGATE_GUIDANCE + ("none", "oracle")


def guidance_acquisition(guidance: str, optimistic: str) -> str:
    """The acquisition a surrogate guidance uses: ``optimistic`` (the run's ``acquisition.kind``) for
    ``"optimistic"``, else the one the guidance names (``"mean"``, ``"thompson"``)."""
    return optimistic if guidance == "optimistic" else guidance


class SurrogateReward:
    """``r(x) = acquisition(φ(x))`` on images; differentiable.

    Args:
        featurizer: frozen, differentiable ``images -> (N, D)``.
        acquisition: ``features (N, D) -> (N,)`` scores on a fitted surrogate
            (:mod:`surrogate.acquisition`: UCB, the posterior mean, a Thompson draw, the max
            over heads); a Thompson draw is fixed when it is made: make one per prompt batch.
    """

    differentiable = True

    def __init__(self, featurizer, acquisition: Callable[[torch.Tensor], torch.Tensor]):
        self.featurizer, self.acquisition = featurizer, acquisition

    def __call__(self, images: torch.Tensor, prompts: Sequence[str] | None = None) -> torch.Tensor:
        return self.acquisition(self.featurizer(images)).reshape(-1).float()


class ZeroReward:
    """The reward of round 0: pretrained sampling (no gradient, uniform weights)."""

    differentiable = False

    def __call__(self, images: torch.Tensor, prompts: Sequence[str] | None = None) -> torch.Tensor:
        return torch.zeros(images.shape[0], device=images.device)
