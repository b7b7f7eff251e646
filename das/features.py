"""The featurizer seam: images -> feature vectors, frozen and differentiable.

The online loop's surrogate sees images only through a featurizer: CLIP ViT-L/14 image
embeddings for Stable Diffusion, a small fixed network for the embedded world. A
featurizer's parameters never train; gradients flow through it to the images.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch


@runtime_checkable
class Featurizer(Protocol):
    """Maps images `(N, C, H, W)` in [0, 1] to features `(N, dim)`; differentiable."""

    dim: int

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """Returns `(N, dim)` features."""


def mean_cosine_distance(features: torch.Tensor) -> float:
    """Diversity of a set: mean pairwise cosine distance ``1 − cos(φ_i, φ_j)`` over `(n, D)` features, i ≠ j."""
    if features.shape[0] < 2:
        return 0.0
    unit = torch.nn.functional.normalize(features.double(), dim=-1)
    similarity = unit @ unit.T
    n = features.shape[0]
    return float(1.0 - (similarity.sum() - similarity.diagonal().sum()) / (n * (n - 1)))
