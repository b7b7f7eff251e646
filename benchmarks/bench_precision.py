"""DAS's opt-in precision and layout options against float32 eager: ``python -m benchmarks.bench_precision``.

Same components and settings as :mod:`benchmarks.bench_das_sd` (SD-proportioned tiny
components, 20 DDIM steps, CFG 5, brightness reward, 2 threads). Each variant runs
``DASSampler.sample`` on the same prompts and seed:

* ``fp32``: float32, eager, contiguous (the default, the baseline);
* ``autocast_bf16`` / ``autocast_fp16``: ``DASSampler(autocast=...)`` (UNet, decode, reward
  under ``torch.autocast``; particles and weights in float32);
* ``channels_last``: ``adapter.set_speed_options(channels_last=True)`` (UNet and VAE);
* ``compile`` (only with ``--compile``, compiling takes minutes on a CPU):
  ``adapter.set_speed_options(compile_unet=True)``; its compile time is the first call's
  time less the median of the timed ones.

Timed runs are interleaved across variants (medians). Exactness against ``fp32`` at the
same seed: the largest absolute difference of the final images and the relative difference
of ``log Z``; a variant is ``within_tolerance`` when these are at most 1e-4 and 1e-5 (float32
rounding; a changed resampling decision fails it). Writes ``benchmarks/results/precision.json``.
"""

from __future__ import annotations

import argparse
import time

import torch

from benchmarks.bench_das_sd import GUIDANCE, PROMPTS, brightness, interleaved_medians
from benchmarks.common import write_result

IMAGE_TOLERANCE, LOG_Z_TOLERANCE = 1e-4, 1e-5
VARIANTS = {
    "fp32": {},
    "autocast_bf16": {"autocast": "bf16"},
    "autocast_fp16": {"autocast": "fp16"},
    "channels_last": {"channels_last": True},
    "compile": {"compile_unet": True},
}


def build_sampler(options: dict, steps: int, particles: int):
    """A sampler over fresh proportioned components with one variant's `options`, and its reward."""
    from das import DASSampler, DASSettings
    from das.adapters.stable_diffusion import StableDiffusionAdapter
    from das.rewards import FunctionReward
    from tests.tiny_components import tiny_sd_pipeline

    speed = {key: value for key, value in options.items() if key != "autocast"}
    adapter = StableDiffusionAdapter(tiny_sd_pipeline(proportioned=True), num_steps=steps, guidance_scale=GUIDANCE)
    adapter.set_speed_options(**speed)
    reward = FunctionReward(brightness, differentiable=True, name="brightness")
    settings = DASSettings(kl_coeff=0.005, num_particles=particles, autocast=options.get("autocast"))
    return DASSampler(adapter, settings), reward


def exactness(result, reference) -> dict:
    """Image and ``log Z`` differences of `result` from the float32 `reference` at the same seed."""
    image_diff = (result.images.float() - reference.images.float()).abs().max().item()
    log_z_diff = ((result.log_normalizer - reference.log_normalizer).abs() / reference.log_normalizer.abs()).max()
    return {
        "max_abs_image_diff": image_diff,
        "log_z_rel_diff": log_z_diff.item(),
        "same_selection": bool(torch.equal(result.selected_index, reference.selected_index)),
        "within_tolerance": image_diff <= IMAGE_TOLERANCE and log_z_diff.item() <= LOG_Z_TOLERANCE,
    }


def measure(names: list[str], steps: int, num_prompts: int, particles: int, repeats: int) -> list[dict]:
    """One row per variant: median seconds, ratio to ``fp32``, exactness and first-call seconds."""
    prompts = PROMPTS[:num_prompts]
    samplers = {name: build_sampler(VARIANTS[name], steps, particles) for name in names}
    outputs, first_call = {}, {}
    for name, (sampler, reward) in samplers.items():  # the first call compiles, where compiling is asked for
        start = time.perf_counter()
        outputs[name] = sampler.sample(prompts, reward, torch.Generator().manual_seed(0))
        first_call[name] = time.perf_counter() - start
    fns = {
        name: (lambda s=sampler, r=reward: s.sample(prompts, r, torch.Generator().manual_seed(0)))
        for name, (sampler, reward) in samplers.items()
    }
    timed = interleaved_medians(fns, repeats, warm_up=False)
    base = timed["fp32"]["median"]
    rows = []
    for name in names:
        seconds = timed[name]["median"]
        row = {"variant": name, "options": VARIANTS[name], "seconds": seconds, "over_fp32": seconds / base}
        row.update(exactness(outputs[name], outputs["fp32"]))
        row["first_call_seconds"] = first_call[name]
        if name == "compile":
            row["compile_seconds"] = first_call[name] - seconds
        row["seconds_each_run"] = timed[name]["all"]
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    p.add_argument("--repeats", type=int, default=3, help="interleaved timed runs per variant (default 3)")
    p.add_argument("--steps", type=int, default=20, help="DDIM steps (default 20)")
    p.add_argument("--row", default="1x4", help="prompts x particles (default 1x4)")
    p.add_argument("--compile", action="store_true", help="also time torch.compile of the UNet (slow to compile)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    num_prompts, particles = (int(v) for v in args.row.lower().split("x"))
    names = [name for name in VARIANTS if name != "compile" or args.compile]
    rows = measure(names, args.steps, num_prompts, particles, args.repeats)
    for row in rows:
        extra = f", compile {row['compile_seconds']:.1f} s" if "compile_seconds" in row else ""
        print(
            f"{row['variant']:>14}: {row['seconds']:.2f} s, x{row['over_fp32']:.3f} of fp32; image diff "
            f"{row['max_abs_image_diff']:.2e}, log Z rel diff {row['log_z_rel_diff']:.2e}, "
            f"same selection {row['same_selection']}, within tolerance {row['within_tolerance']}{extra}"
        )
    settings = {
        "steps": args.steps,
        "guidance_scale": GUIDANCE,
        "prompts": num_prompts,
        "particles": particles,
        "threads": args.threads,
        "repeats": args.repeats,
        "statistic": "median",
        "tolerance": {"max_abs_image_diff": IMAGE_TOLERANCE, "log_z_rel_diff": LOG_Z_TOLERANCE},
    }
    path = write_result("precision", {"benchmark": "precision", "settings": settings, "rows": rows})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
