"""A procedurally generated image world: coloured shapes on plain or textured backgrounds.

Every image is a deterministic function of its prompt and a seed. A prompt names the
foreground shape and its colour (``"a red circle"``); everything else varies at random
within a prompt: the background (plain, gradient, stripes, checkerboard or noise, with a
random muted hue and brightness), and the shape's position, size and rotation. Plain
backgrounds give small JPEG files and greyish images; textured ones give large files and
more colour, so both oracles vary within a prompt.

Foreground colours are saturated (saturation ≥ 0.85); background colours are muted
(saturation ≤ 0.45), so a pixel's saturation tells foreground from background. Shapes are
drawn at 4× resolution and box-filtered down, so edges are anti-aliased.
"""

from __future__ import annotations

import colorsys
import math
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw

SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
COLORS: tuple[str, ...] = ("red", "green", "blue")
# Hue (in [0, 1)) of each foreground colour.
COLOR_HUES: dict[str, float] = {"red": 0.0, "green": 1.0 / 3.0, "blue": 2.0 / 3.0}
PROMPTS: tuple[str, ...] = tuple(f"a {c} {s}" for c in COLORS for s in SHAPES)
BACKGROUNDS: tuple[str, ...] = ("plain", "gradient", "stripes", "checker", "noise")
IMAGE_SIZE = 32
_SUPERSAMPLE = 4


def prompt_label(prompt: str) -> tuple[str, str]:
    """Returns ``(color, shape)`` for one of :data:`PROMPTS`.

    Raises:
        ValueError: if `prompt` is not a prompt of this world.
    """
    words = prompt.strip().lower().split()
    if len(words) != 3 or words[1] not in COLORS or words[2] not in SHAPES:
        raise ValueError(f"{prompt!r} is not a prompt of the embedded world; use one of {list(PROMPTS)}.")
    return words[1], words[2]


def _hsv255(h: float, s: float, v: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(h % 1.0, s, v), dtype=np.float32) * 255.0


def _muted(rng: np.random.Generator) -> np.ndarray:
    return _hsv255(rng.random(), rng.uniform(0.0, 0.45), rng.uniform(0.25, 0.95))


def _background(kind: str, rng: np.random.Generator, size: int) -> np.ndarray:
    """A `(size, size, 3)` float array in 0..255."""
    a, b = _muted(rng), _muted(rng)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    if kind == "plain":
        return np.broadcast_to(a, (size, size, 3)).copy()
    if kind == "gradient":
        angle = rng.uniform(0, 2 * math.pi)
        t = (np.cos(angle) * (xx - 0.5) + np.sin(angle) * (yy - 0.5)) + 0.5
        t = np.clip(t, 0, 1)[..., None]
        return (1 - t) * a + t * b
    if kind == "stripes":
        period = rng.uniform(0.08, 0.3)
        angle = rng.uniform(0, math.pi)
        u = np.cos(angle) * xx + np.sin(angle) * yy
        t = ((u / period) % 1.0 < 0.5).astype(np.float32)[..., None]
        return (1 - t) * a + t * b
    if kind == "checker":
        cell = rng.uniform(0.06, 0.25)
        t = ((np.floor(xx / cell) + np.floor(yy / cell)) % 2).astype(np.float32)[..., None]
        return (1 - t) * a + t * b
    if kind == "noise":
        amp = rng.uniform(20, 70)
        noise = rng.normal(0, amp, size=(size, size, 3)).astype(np.float32)
        base = np.broadcast_to(a, (size, size, 3))
        # Muted noise: mostly luminance, a little chroma, so it stays unsaturated.
        lum = noise.mean(axis=-1, keepdims=True)
        return np.clip(base + 0.8 * lum + 0.2 * (noise - lum), 0, 255)
    raise ValueError(f"unknown background {kind!r}; use one of {list(BACKGROUNDS)}.")


def _shape_polygon(shape: str, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    if shape == "square":
        # Axis-aligned within ±15°, so the bounding-box fill ratio stays near 1 in the classifier.
        corners = [(-1, -1), (1, -1), (1, 1), (-1, 1)]
        rr = r / math.sqrt(2) * math.sqrt(2)  # half-side = r / sqrt(2) * sqrt(2) = r
        ca, sa = math.cos(angle), math.sin(angle)
        return [(cx + rr * (x * ca - y * sa) * 0.85, cy + rr * (x * sa + y * ca) * 0.85) for x, y in corners]
    if shape == "triangle":
        return [
            (
                cx + r * math.cos(angle + k * 2 * math.pi / 3 - math.pi / 2),
                cy + r * math.sin(angle + k * 2 * math.pi / 3 - math.pi / 2),
            )
            for k in range(3)
        ]
    raise ValueError(shape)


def render_scene(prompt: str, seed: int | np.random.Generator, size: int = IMAGE_SIZE) -> np.ndarray:
    """Renders one scene for `prompt`.

    Args:
        prompt: one of :data:`PROMPTS`.
        seed: an int seed or a ``numpy.random.Generator``.
        size: output side in pixels.

    Returns:
        A `(size, size, 3)` ``uint8`` array.
    """
    color, shape = prompt_label(prompt)
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    big = size * _SUPERSAMPLE
    kind = BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))]
    canvas = _background(kind, rng, big)
    fg = _hsv255(COLOR_HUES[color] + rng.uniform(-0.03, 0.03), rng.uniform(0.85, 1.0), rng.uniform(0.75, 1.0))
    r = rng.uniform(0.2, 0.32) * big
    margin = r * 1.05
    cx, cy = rng.uniform(margin, big - margin), rng.uniform(margin, big - margin)
    mask_img = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(mask_img)
    if shape == "circle":
        draw.ellipse([cx - r * 0.9, cy - r * 0.9, cx + r * 0.9, cy + r * 0.9], fill=255)
    elif shape == "square":
        draw.polygon(_shape_polygon(shape, cx, cy, r, rng.uniform(-0.26, 0.26)), fill=255)
    else:
        draw.polygon(_shape_polygon(shape, cx, cy, r, rng.uniform(-0.2, 0.2)), fill=255)
    mask = np.asarray(mask_img, dtype=np.float32)[..., None] / 255.0
    canvas = canvas * (1 - mask) + fg * mask
    img = Image.fromarray(np.clip(canvas, 0, 255).astype(np.uint8)).resize((size, size), Image.BOX)
    return np.asarray(img)


def make_dataset(
    num_per_prompt: int, seed: int = 0, prompts: Sequence[str] = PROMPTS, size: int = IMAGE_SIZE
) -> tuple[torch.Tensor, list[int]]:
    """Renders `num_per_prompt` scenes for every prompt, deterministically from `seed`.

    Returns:
        ``(images, labels)``: ``uint8`` images `(N, 3, size, size)` with
        ``N = num_per_prompt * len(prompts)``, and the prompt index of each image.
    """
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for _ in range(num_per_prompt):
        for p, prompt in enumerate(prompts):
            images.append(render_scene(prompt, rng, size))
            labels.append(p)
    arr = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
    return arr, labels
