"""The world's black-box oracles, as rewards: JPEG compressibility, colourfulness, and a
rare-colour oracle whose best images are ones the pretrained model seldom draws.

The rare-colour oracle scores an image by its mean opponent colour
``c = (mean(R − G), mean(½(R + G) − B))`` (pixels in [0, 1]), as the sum of two Gaussian bumps:

* a *decoy* of height 0.4 and width 0.10 at ``c = (−0.05, −0.05)``, beside the middle of
  the model's colour distribution, where most samples fall (slightly green-blue);
* the *target* of height 1 and width 0.06 at ``c = (0.15, 0.15)`` (an orange cast), on the
  other side, about two standard deviations out, where about 3% of the model's samples fall.

A method that only climbs what it has seen climbs the decoy; finding the target takes
queries in a region the first rounds barely cover. Its measured spread, noise and the
model's hit rate are in ``docs/embedded_world.md``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from das.rewards.colorfulness import ColorfulnessReward
from das.rewards.jpeg import JPEGCompressibility

RARE_TARGET = (0.15, 0.15)
RARE_TARGET_WIDTH = 0.06
RARE_DECOY = (-0.05, -0.05)
RARE_DECOY_WIDTH = 0.10
RARE_DECOY_HEIGHT = 0.4


def opponent_means(images: torch.Tensor) -> torch.Tensor:
    """`(N, 2)`: each image's mean ``R − G`` and ``½(R + G) − B`` (pixels in [0, 1])."""
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"opponent_means needs RGB images of shape (N, 3, H, W), got {tuple(images.shape)}.")
    r, g, b = images[:, 0], images[:, 1], images[:, 2]
    return torch.stack([(r - g).mean((1, 2)), (0.5 * (r + g) - b).mean((1, 2))], 1)


def _bump(c: torch.Tensor, centre: tuple[float, float], width: float) -> torch.Tensor:
    d2 = (c - torch.tensor(centre, dtype=c.dtype, device=c.device)).pow(2).sum(1)
    return torch.exp(-d2 / (2 * width**2))


def rare_target_score(images: torch.Tensor) -> torch.Tensor:
    """The target bump alone, in [0, 1]: above 0.5 counts as a hit of the rare region."""
    return _bump(opponent_means(images), RARE_TARGET, RARE_TARGET_WIDTH)


class RareColourReward:
    """The rare-colour oracle (module docstring) as a differentiable reward, in [0, 1.4]."""

    differentiable = True
    name = "rare"

    def __call__(self, images: torch.Tensor, prompts: Sequence[str] | None = None) -> torch.Tensor:
        c = opponent_means(images)
        return _bump(c, RARE_TARGET, RARE_TARGET_WIDTH) + RARE_DECOY_HEIGHT * _bump(c, RARE_DECOY, RARE_DECOY_WIDTH)

    def __repr__(self) -> str:
        return "RareColourReward()"


def jpeg_reward() -> JPEGCompressibility:
    """The world's JPEG oracle: negated kB at quality 95, as for Stable Diffusion."""
    return JPEGCompressibility(quality=95)


def oracle_values(images: torch.Tensor) -> dict[str, np.ndarray]:
    """The oracles on images in [0, 1]: ``{"jpeg": kB (positive), "colorfulness": M, "rare": r}``."""
    with torch.no_grad():
        return {
            "jpeg": (-jpeg_reward()(images)).cpu().numpy(),
            "colorfulness": ColorfulnessReward()(images).cpu().numpy(),
            "rare": RareColourReward()(images).cpu().numpy(),
        }
