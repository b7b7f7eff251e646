"""Toy demo: DAS against pretrained sampling and plain reward guidance on the paper's 2-D toys.

Run with ``python -m das.toy.demo --out runs/toy_demo`` (``make demo`` before the embedded
world existed). Prints the EMD of each method's 500 samples to the exact tilted target
(mean over 5 draws of the reference set), next to the floor (the same for an independent
draw of the target), and writes a scatter PNG and a
JSON of the figures.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from das.rewards import FunctionReward
from das.smc import DASSampler, DASSettings
from das.toy.adapter import ToyAdapter
from das.toy.mixtures import eight_gaussians, emd, nine_gaussians, paper_toy_reward, tilt_quadratic

SETTINGS = {"nine": nine_gaussians, "circle": eight_gaussians}
REFERENCE_DRAWS = 5


def run(setting: str, num_samples: int, num_particles: int, num_steps: int, seed: int) -> dict:
    """Draws `num_samples` points with each method and measures their EMD to the target."""
    prior, reward, alpha = SETTINGS[setting](), paper_toy_reward(), 1.0
    target, _ = tilt_quadratic(prior, reward, alpha)
    adapter = ToyAdapter(prior, num_steps=num_steps, eta=1.0)
    generator = torch.Generator().manual_seed(seed)
    zero = FunctionReward(lambda x: torch.zeros(x.shape[0]), differentiable=False, name="zero")

    samples, seconds = {}, {}
    start = time.perf_counter()
    pretrained = DASSampler(adapter, DASSettings(kl_coeff=alpha, num_particles=num_samples, selection="all"))
    samples["pretrained"] = pretrained.sample([""], zero, generator).samples[0]
    seconds["pretrained"] = time.perf_counter() - start

    start = time.perf_counter()
    # Reward guidance alone: the same gradient-shifted proposal, no weights, no resampling.
    guidance = DASSampler(
        adapter,
        DASSettings(kl_coeff=alpha, num_particles=num_samples, tempering="none", ess_threshold=0.0, selection="all"),
    )
    samples["guidance"] = guidance.sample([""], reward, generator).samples[0]
    seconds["guidance"] = time.perf_counter() - start

    start = time.perf_counter()
    # DAS: one sample drawn by weight from each of `num_samples` independent SMC runs.
    das = DASSampler(
        adapter, DASSettings(kl_coeff=alpha, num_particles=num_particles, selection="sample", progress=True)
    )
    samples["das"] = das.sample([""] * num_samples, reward, generator).selected
    seconds["das"] = time.perf_counter() - start

    samples["target"] = target.sample(num_samples, generator)
    # A 500-point EMD is noisy (a few points more in one far mode move it a lot), so every
    # figure is the mean over independent draws of the reference set.
    references = [target.sample(num_samples, generator) for _ in range(REFERENCE_DRAWS)]
    figures = {
        name: float(np.mean([emd(points, ref) for ref in references]))
        for name, points in samples.items()
        if name != "target"
    }
    figures["floor"] = float(np.mean([emd(target.sample(num_samples, generator), ref) for ref in references]))
    return {
        "setting": setting,
        "emd": figures,
        "seconds": seconds,
        "samples": {k: v.numpy() for k, v in samples.items()},
    }


def plot(result: dict, path: Path) -> None:
    """Scatter of each method's samples over the target's."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = ["pretrained", "guidance", "das"]
    titles = {"pretrained": "pretrained", "guidance": "reward guidance", "das": "DAS"}
    fig, axes = plt.subplots(1, 3, figsize=(12, 4.2), sharex=True, sharey=True)
    target = result["samples"]["target"]
    for ax, name in zip(axes, names):
        ax.scatter(target[:, 0], target[:, 1], s=4, c="lightgray", label="exact target")
        pts = result["samples"][name]
        ax.scatter(pts[:, 0], pts[:, 1], s=4, c="tab:blue" if name != "das" else "tab:red", label=titles[name])
        ax.set_title(f"{titles[name]}: EMD {result['emd'][name]:.3f}")
        ax.set_xlim(-7, 7)
        ax.set_ylim(-7, 7)
        ax.set_aspect("equal")
        ax.legend(loc="upper right", fontsize=7)
    fig.suptitle(f"{result['setting']} Gaussians, reward −x²/100 − y², α = 1 (floor EMD {result['emd']['floor']:.3f})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/toy_demo"), help="output folder")
    parser.add_argument("--setting", choices=sorted(SETTINGS), default="nine")
    parser.add_argument("--samples", type=int, default=500)
    parser.add_argument("--particles", type=int, default=100)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if min(args.samples, args.particles, args.steps) < 1:
        parser.error("--samples, --particles and --steps must be positive.")
    args.out.mkdir(parents=True, exist_ok=True)
    result = run(args.setting, args.samples, args.particles, args.steps, args.seed)
    print(f"EMD to the exact target ({args.samples} samples each):")
    for name in ("pretrained", "guidance", "das", "floor"):
        print(f"  {name:<11s} {result['emd'][name]:.3f}")
    plot(result, args.out / "toy_scatter.png")
    summary = {k: result[k] for k in ("setting", "emd", "seconds")}
    (args.out / "toy_emd.json").write_text(json.dumps(summary, indent=2))
    print(f"wrote {args.out / 'toy_scatter.png'} and {args.out / 'toy_emd.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
