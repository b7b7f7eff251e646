"""The world's two black-box oracles, as rewards: JPEG compressibility and colourfulness."""

from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image

from das.rewards.colorfulness import ColorfulnessReward


def _jpeg_kb(images: torch.Tensor, quality: int = 95) -> torch.Tensor:
    """Fallback: JPEG size in kB (quality 95) of images in [0, 1], `(N, 3, H, W)` -> `(N,)`."""
    pixels = (images.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    sizes = []
    for pixel in pixels:
        buf = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(pixel)).save(buf, format="JPEG", quality=quality)
        sizes.append(buf.tell() / 1000.0)
    return torch.tensor(sizes)


def jpeg_reward():
    """``das.rewards.jpeg.JPEGCompressibility`` (negated kB at quality 95)."""
    try:
        from das.rewards.jpeg import JPEGCompressibility
    except ImportError:  # the project's JPEG reward is missing: same measurement, locally
        from das.rewards.base import FunctionReward

        return FunctionReward(lambda x: -_jpeg_kb(x), differentiable=False, name="jpeg")
    return JPEGCompressibility(quality=95)


def oracle_values(images: torch.Tensor) -> dict[str, np.ndarray]:
    """Both oracles on images in [0, 1]: ``{"jpeg": kB (positive), "colorfulness": M}``."""
    with torch.no_grad():
        return {
            "jpeg": (-jpeg_reward()(images)).cpu().numpy(),
            "colorfulness": ColorfulnessReward()(images).cpu().numpy(),
        }
