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
