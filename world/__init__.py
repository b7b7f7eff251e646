"""The embedded world: a procedural image world, a small text-to-image pixel diffusion model
trained on it (shipped under ``checkpoints/pretrained/shapes32``), its featurizer and its
oracles' noise scales. See ``docs/embedded_world.md``.
"""

from __future__ import annotations

from pathlib import Path

from world.featurizer import WorldFeaturizer
from world.scenes import BACKGROUNDS, COLORS, IMAGE_SIZE, PROMPTS, SHAPES, make_dataset, prompt_label, render_scene

MODEL_NAME = "shapes32"
DEFAULT_MODEL_PATH = str(Path(__file__).resolve().parents[1] / "checkpoints" / "pretrained" / MODEL_NAME)

# Sampling settings the world was checked with (tests, benchmark, pictures).
DEFAULT_NUM_STEPS = 25
DEFAULT_GUIDANCE_SCALE = 3.0
DEFAULT_ETA = 1.0

# Oracle label noise std for the online loop: 0.1 × each oracle's natural scale on this world,
# taken as its spread (P90 − P10) over the model's samples rounded down: JPEG 0.2 kB (32×32
# files are ~1.0–1.3 kB, mostly header), colourfulness 50, rare colour 0.3 (world/oracles.py).
# The shipped model's spreads are 0.226 kB and 54.6, 11× these, a thin margin. Measured figures are in
# docs/embedded_world.md and docs/images/world_oracles.json; tests/world assert
# spread ≥ 10 × these.
ORACLE_NOISE_STD: dict[str, float] = {"jpeg": 0.02, "colorfulness": 5.0, "rare": 0.03}

__all__ = [
    "BACKGROUNDS",
    "COLORS",
    "DEFAULT_ETA",
    "DEFAULT_GUIDANCE_SCALE",
    "DEFAULT_MODEL_PATH",
    "DEFAULT_NUM_STEPS",
    "IMAGE_SIZE",
    "MODEL_NAME",
    "ORACLE_NOISE_STD",
    "PROMPTS",
    "SHAPES",
    "WorldFeaturizer",
    "make_dataset",
    "prompt_label",
    "render_scene",
]
