"""Pictures of the shipped world model: a sample grid per prompt and the oracles' histograms.

Usage::

    python -m world.pictures [--model PATH] [--per-prompt 32] [--seed 0]

Writes ``docs/images/world_samples.png`` (rows: prompts; first column a rendered
training scene, then model samples), ``docs/images/world_oracles.png`` (histograms of JPEG
kB, colourfulness and the rare-colour oracle over the model's samples, and over rendered
scenes for comparison) and ``docs/images/world_oracles.json`` (percentiles, spreads and the
rare-colour oracle's hit rate: the share of images whose target bump exceeds 0.5).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from das.ancestral import sample_images
from world import ORACLE_NOISE_STD, PROMPTS, make_dataset
from world.classify import SceneClassifier
from world.model import load_adapter
from world.oracles import oracle_values, rare_target_score

DOCS_IMAGES = Path(__file__).resolve().parents[1] / "docs" / "images"


def spreads(values: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """P10, P50, P90, P90 − P10, mean and std of each oracle."""
    out = {}
    for k, v in values.items():
        p10, p50, p90 = np.percentile(v, [10, 50, 90])
        out[k] = {
            "p10": float(p10),
            "p50": float(p50),
            "p90": float(p90),
            "spread": float(p90 - p10),
            "mean": float(v.mean()),
            "std": float(v.std()),
        }
    return out


def save_grid(images: torch.Tensor, real: torch.Tensor, path: Path, cols: int, scale: int = 3) -> None:
    """Rows per prompt: one rendered scene, then `cols` samples, with the prompt on the left."""
    size = images.shape[-1] * scale
    label_w, pad = 110, 2
    h = len(PROMPTS) * (size + pad) + pad
    w = label_w + (cols + 1) * (size + pad) + pad + 6
    canvas = Image.new("RGB", (w, h), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)

    def to_pil(t: torch.Tensor) -> Image.Image:
        pixels = (t.permute(1, 2, 0).clamp(0, 1).numpy() * 255).round().astype(np.uint8)
        return Image.fromarray(pixels).resize((size, size), Image.NEAREST)

    for i, prompt in enumerate(PROMPTS):
        y = pad + i * (size + pad)
        draw.text((4, y + size // 2 - 6), prompt, fill=(0, 0, 0))
        canvas.paste(to_pil(real[i]), (label_w, y))
        for j in range(cols):
            canvas.paste(to_pil(images[i * cols + j]), (label_w + 6 + (j + 1) * (size + pad), y))
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)


def save_histograms(model_vals: dict, real_vals: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = {
        "jpeg": "JPEG size at quality 95 (kB)",
        "colorfulness": "colourfulness (Hasler–Süsstrunk)",
        "rare": "rare-colour oracle",
    }
    fig, axes = plt.subplots(1, len(labels), figsize=(5 * len(labels), 3.6))
    for ax, (key, label) in zip(axes, labels.items()):
        bins = np.linspace(
            min(model_vals[key].min(), real_vals[key].min()), max(model_vals[key].max(), real_vals[key].max()), 40
        )
        ax.hist(real_vals[key], bins=bins, alpha=0.45, label="rendered scenes", color="gray")
        ax.hist(model_vals[key], bins=bins, alpha=0.7, label="model samples", color="C0")
        p10, p90 = np.percentile(model_vals[key], [10, 90])
        for p in (p10, p90):
            ax.axvline(p, color="C3", ls="--", lw=1)
        ax.set_title(f"{label}\nP90−P10 = {p90 - p10:.2f}; noise std = {ORACLE_NOISE_STD[key]:g}", fontsize=9)
        ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None, help="model folder (default: the shipped model)")
    p.add_argument("--per-prompt", type=int, default=32, help="samples per prompt for the histograms")
    p.add_argument("--grid-cols", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out-dir", default=str(DOCS_IMAGES))
    args = p.parse_args(argv)
    out = Path(args.out_dir)
    start = time.time()
    adapter = load_adapter(args.model)
    gen = torch.Generator().manual_seed(args.seed)
    prompts = [pr for pr in PROMPTS for _ in range(args.per_prompt)]
    images = sample_images(adapter, prompts, gen)
    real, labels = make_dataset(args.per_prompt, seed=args.seed + 1)
    real = real.float() / 255.0
    grid_idx = [i * args.per_prompt + j for i in range(len(PROMPTS)) for j in range(args.grid_cols)]
    save_grid(images[grid_idx], real[: len(PROMPTS)], out / "world_samples.png", args.grid_cols)
    model_vals, real_vals = oracle_values(images), oracle_values(real)
    save_histograms(model_vals, real_vals, out / "world_oracles.png")
    pred = SceneClassifier.fit().predict(images)
    target = np.repeat(np.arange(len(PROMPTS)), args.per_prompt)
    acc = {pr: float((pred[target == i] == i).mean()) for i, pr in enumerate(PROMPTS)}
    hits = {
        "model_samples": float((rare_target_score(images) > 0.5).float().mean()),
        "rendered_scenes": float((rare_target_score(real) > 0.5).float().mean()),
    }
    summary = {
        "model_samples": spreads(model_vals),
        "rendered_scenes": spreads(real_vals),
        "rare_hit_rate": hits,
        "noise_std": ORACLE_NOISE_STD,
        "classifier_accuracy": acc,
        "per_prompt": args.per_prompt,
        "seed": args.seed,
        "seconds": time.time() - start,
    }
    with open(out / "world_oracles.json", "w") as f:
        json.dump(summary, f, indent=2)
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
