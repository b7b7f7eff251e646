"""Image helpers shared by the command-line tools: uint8 conversion, PNG files, grids."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """`(..., 3, H, W)` floats in [0, 1] -> `(..., H, W, 3)` uint8."""
    return (images.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).movedim(-3, -1).cpu().numpy()


def save_png(array: np.ndarray, path: Path) -> None:
    """Writes one `(H, W, 3)` uint8 image."""
    from PIL import Image

    Image.fromarray(array).save(path)


def image_grid(images: np.ndarray, columns: int | None = None) -> np.ndarray:
    """`(N, H, W, 3)` uint8 -> one grid image, row-major."""
    n, h, w, c = images.shape
    columns = columns or math.ceil(math.sqrt(n))
    rows = math.ceil(n / columns)
    grid = np.zeros((rows * h, columns * w, c), dtype=np.uint8)
    for i, image in enumerate(images):
        r, q = divmod(i, columns)
        grid[r * h : (r + 1) * h, q * w : (q + 1) * w] = image
    return grid
