"""A simple classifier of the world's scenes, fitted on the generator's own labelled images.

Colour is a rule: the foreground is the set of saturated pixels (HSV saturation > 0.75 and
value > 0.35; backgrounds are rendered with saturation ≤ 0.45), and its colour is the
nearest of the world's hues to their circular-mean hue. Only the largest 8-connected
component of saturated pixels counts as the foreground. Shape is a nearest-centroid
classifier on two rotation-tolerant mask statistics, fitted on rendered images:

- compactness ``area / (π r_max²)`` with ``r_max`` the largest distance from the mask's
  centroid to a mask pixel (circle ≈ 1, square ≈ 2/π, triangle ≈ 0.41);
- bounding-box fill ``area / (box width · box height)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage

from world.scenes import COLOR_HUES, COLORS, PROMPTS, SHAPES, make_dataset, prompt_label


def _hsv(images: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`images` `(N, 3, H, W)` floats in [0, 1] -> hue, saturation, value `(N, H, W)`."""
    r, g, b = images[:, 0], images[:, 1], images[:, 2]
    mx, mn = images.max(1), images.min(1)
    delta = mx - mn
    sat = np.where(mx > 1e-6, delta / np.maximum(mx, 1e-6), 0.0)
    d = np.maximum(delta, 1e-6)
    hue = np.where(mx == r, ((g - b) / d) % 6, np.where(mx == g, (b - r) / d + 2, (r - g) / d + 4)) / 6.0
    return hue, sat, mx


def mask_features(images: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Foreground statistics of images in [0, 1], `(N, 3, H, W)` (or ``uint8``).

    Returns:
        ``(features, hue, area)``: `(N, 2)` compactness and box fill, the foreground's
        circular-mean hue `(N,)` in [0, 1), and its pixel count `(N,)`.
    """
    x = images.detach().cpu()
    x = (x.float() / 255.0 if x.dtype == torch.uint8 else x.float()).numpy()
    hue, sat, val = _hsv(x)
    mask = (sat > 0.75) & (val > 0.35)
    n, h, w = mask.shape
    yy, xx = np.mgrid[0:h, 0:w]
    feats = np.zeros((n, 2))
    hues = np.zeros(n)
    area = mask.reshape(n, -1).sum(1).astype(float)
    for i in range(n):
        # Keep the largest 8-connected component: stray saturated pixels are not the shape.
        comp, count = ndimage.label(mask[i], structure=np.ones((3, 3)))
        if count == 0:
            area[i] = 0
            continue
        sizes = ndimage.sum(np.ones_like(comp), comp, index=np.arange(1, count + 1))
        m = comp == (int(np.argmax(sizes)) + 1)
        area[i] = m.sum()
        if area[i] < 4:
            continue
        cy, cx = yy[m].mean(), xx[m].mean()
        rmax = np.sqrt((yy[m] - cy) ** 2 + (xx[m] - cx) ** 2).max() + 0.5
        box = (yy[m].max() - yy[m].min() + 1) * (xx[m].max() - xx[m].min() + 1)
        feats[i] = (area[i] / (math.pi * rmax**2), area[i] / box)
        ang = hue[i][m] * 2 * math.pi
        hues[i] = (math.atan2(np.sin(ang).mean(), np.cos(ang).mean()) / (2 * math.pi)) % 1.0
    return feats, hues, area


@dataclass
class SceneClassifier:
    """Predicts the prompt of an image of the world (or ``-1`` when no foreground is found)."""

    centroids: np.ndarray  # (len(SHAPES), 2)
    scale: np.ndarray  # (2,)
    min_area: float = 12.0

    @classmethod
    def fit(cls, num_per_prompt: int = 100, seed: int = 12345) -> SceneClassifier:
        """Fits the shape centroids on freshly rendered, labelled scenes."""
        images, labels = make_dataset(num_per_prompt, seed=seed)
        feats, _, _ = mask_features(images)
        shape_idx = np.array([SHAPES.index(prompt_label(PROMPTS[label])[1]) for label in labels])
        centroids = np.stack([feats[shape_idx == s].mean(0) for s in range(len(SHAPES))])
        return cls(centroids=centroids, scale=feats.std(0) + 1e-6)

    def predict(self, images: torch.Tensor) -> np.ndarray:
        """Prompt indices into :data:`PROMPTS`, `(N,)`; ``-1`` for images without a foreground."""
        feats, hues, area = mask_features(images)
        dist = (((feats[:, None, :] - self.centroids[None]) / self.scale) ** 2).sum(-1)
        shape = dist.argmin(1)
        ref = np.array([COLOR_HUES[c] for c in COLORS])
        hd = np.abs(hues[:, None] - ref[None])
        colour = np.minimum(hd, 1 - hd).argmin(1)
        out = np.array([PROMPTS.index(f"a {COLORS[c]} {SHAPES[s]}") for c, s in zip(colour, shape)])
        return np.where(area >= self.min_area, out, -1)
