"""Colourfulness (Hasler & Süsstrunk, 2003) as a differentiable reward.

With pixels on the 0–255 scale, ``rg = R − G`` and ``yb = ½(R + G) − B``;
``M = sqrt(σ_rg² + σ_yb²) + 0.3 · sqrt(μ_rg² + μ_yb²)``, with means and (population)
standard deviations over each image's pixels. Greyscale images score 0; typical photos
score 0–150.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def colorfulness(images: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Hasler–Süsstrunk colourfulness of RGB images in [0, 1], `(N, 3, H, W)` -> `(N,)`.

    `eps` inside the square roots keeps the gradient finite for flat grey images.
    """
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"colorfulness needs RGB images of shape (N, 3, H, W), got {tuple(images.shape)}.")
    x = images * 255.0
    r, g, b = x[:, 0], x[:, 1], x[:, 2]
    rg = (r - g).flatten(1)
    yb = (0.5 * (r + g) - b).flatten(1)
    mu_rg, mu_yb = rg.mean(1), yb.mean(1)
    var_rg = (rg - mu_rg[:, None]).pow(2).mean(1)
    var_yb = (yb - mu_yb[:, None]).pow(2).mean(1)
    return (var_rg + var_yb + eps).sqrt() + 0.3 * (mu_rg.pow(2) + mu_yb.pow(2) + eps).sqrt()


class ColorfulnessReward:
    """Colourfulness as a :class:`das.rewards.base.Reward` (differentiable).

    Args:
        scale: multiplies the score (e.g. ``0.01`` to bring it near 1).
    """

    differentiable = True

    def __init__(self, scale: float = 1.0):
        self.scale = float(scale)
        self.name = "colorfulness"

    def __call__(self, images: torch.Tensor, prompts: Sequence[str] | None = None) -> torch.Tensor:
        return self.scale * colorfulness(images)

    def __repr__(self) -> str:
        return f"ColorfulnessReward(scale={self.scale:g})"
