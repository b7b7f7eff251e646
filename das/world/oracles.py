"""The world's two black-box oracles, as rewards: JPEG compressibility and colourfulness."""

from __future__ import annotations

import numpy as np
import torch

from das.rewards.colorfulness import ColorfulnessReward
from das.rewards.jpeg import JPEGCompressibility


def jpeg_reward() -> JPEGCompressibility:
    """The world's JPEG oracle: negated kB at quality 95, as for Stable Diffusion."""
    return JPEGCompressibility(quality=95)


def oracle_values(images: torch.Tensor) -> dict[str, np.ndarray]:
    """Both oracles on images in [0, 1]: ``{"jpeg": kB (positive), "colorfulness": M}``."""
    with torch.no_grad():
        return {
            "jpeg": (-jpeg_reward()(images)).cpu().numpy(),
            "colorfulness": ColorfulnessReward()(images).cpu().numpy(),
        }
