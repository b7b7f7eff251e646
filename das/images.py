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


def labelled_grid(columns: list[tuple[str, np.ndarray]], scale: int) -> np.ndarray:
    """Columns of `(R, H, W, 3)` uint8 tiles side by side, each under a text header."""
    from PIL import Image, ImageDraw

    r, h, w, _ = columns[0][1].shape
    head, pad = 14, 2
    tile_w, tile_h = w * scale, h * scale
    canvas = Image.new("RGB", (len(columns) * (tile_w + pad) + pad, head + r * (tile_h + pad) + pad), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for c, (label, tiles) in enumerate(columns):
        x = pad + c * (tile_w + pad)
        draw.text((x + 1, 1), label, fill=(0, 0, 0))
        for i, tile in enumerate(tiles):
            image = Image.fromarray(tile).resize((tile_w, tile_h), Image.NEAREST)
            canvas.paste(image, (x, head + pad + i * (tile_h + pad)))
    return np.asarray(canvas)
