"""JPEG compressibility: the negated size of the image saved as JPEG (quality 95), in kB."""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image


class JPEGCompressibility:
    """``−(JPEG bytes) / 1000`` per image; not differentiable (the sampler runs gradient-free).

    Args:
        quality: JPEG quality.
    """

    differentiable = False

    def __init__(self, quality: int = 95):
        self.quality = int(quality)

    def __call__(self, images: torch.Tensor, prompts: Sequence[str] | None = None) -> torch.Tensor:
        """Images `(N, 3, H, W)` in [0, 1] -> `(N,)` negated sizes in kB, float32 on the images' device."""
        pixels = (images.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        sizes = []
        for pixel in pixels:
            buffer = io.BytesIO()
            Image.fromarray(np.ascontiguousarray(pixel)).save(buffer, format="JPEG", quality=self.quality)
            sizes.append(buffer.tell() / 1000.0)
        return -torch.tensor(sizes, dtype=torch.float32, device=images.device)

    def __repr__(self) -> str:
        return f"JPEGCompressibility(quality={self.quality})"
