"""Embedded-world benchmark (CPU): plain sampling and DAS on the shipped 32×32 model.

Run: ``.venv/bin/python -m benchmarks.bench_world`` -> ``benchmarks/results/world.json``.

Measures, with 25 DDIM steps (eta 1) and classifier-free guidance 3 (so every model call
runs 2 rows per particle):

* plain sampling of 32 images (target: under 10 s on 2 CPU cores);
* DAS with 4 particles for 8 prompts (32 particles), once with colourfulness (gradient
  proposals: a backward pass through the UNet each step) and once with JPEG
  compressibility (gradient-free proposals) (target: under 60 s).

Each measurement is taken at every torch thread count in ``BENCH_THREADS`` (default
``1,2``; the targets are for 2 cores) in the same run. The machine's load average is
recorded: the 2 cores here are shared, so figures taken under load are upper bounds (with
another job on the second core, 2 threads can be slower than 1).
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

import torch

from das.ancestral import sample_images
from das.rewards.colorfulness import ColorfulnessReward
from das.smc import DASSampler, DASSettings
from world import DEFAULT_GUIDANCE_SCALE, DEFAULT_MODEL_PATH, PROMPTS
from world.model import load_adapter
from world.oracles import jpeg_reward

RESULTS = Path(__file__).resolve().parent / "results" / "world.json"


def _write(payload: dict) -> Path:
    machine = {
        "torch": torch.__version__,
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    tmp = RESULTS.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"machine": machine, **payload}, indent=2))
    os.replace(tmp, RESULTS)
    return RESULTS


def _timed(fn, repeats: int = 2) -> tuple[float, list[float]]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times), times


def _measure(adapter, threads: int) -> dict:
    torch.set_num_threads(threads)
    prompts32 = [PROMPTS[i % len(PROMPTS)] for i in range(32)]
    prompts8 = list(PROMPTS[:8])
    load_before = os.getloadavg()
    sample_best, sample_all = _timed(lambda: sample_images(adapter, prompts32, torch.Generator().manual_seed(0)))
    col, colorful = DASSampler(adapter, DASSettings(kl_coeff=0.05, num_particles=4)), ColorfulnessReward(scale=0.01)
    das_col_best, _ = _timed(lambda: col.sample(prompts8, colorful, torch.Generator().manual_seed(1)), repeats=1)
    jpg, jpeg = DASSampler(adapter, DASSettings(kl_coeff=0.1, num_particles=4)), jpeg_reward()
    das_jpg_best, _ = _timed(lambda: jpg.sample(prompts8, jpeg, torch.Generator().manual_seed(2)), repeats=1)
    return {
        "sample_32_images_seconds": round(sample_best, 3),
        "sample_32_images_all_runs": [round(t, 3) for t in sample_all],
        "das_8_prompts_4_particles_colorfulness_seconds": round(das_col_best, 3),
        "das_8_prompts_4_particles_jpeg_seconds": round(das_jpg_best, 3),
        "load_average_before": [round(v, 2) for v in load_before],
        "load_average_after": [round(v, 2) for v in os.getloadavg()],
    }


def main() -> None:
    thread_counts = [int(t) for t in os.environ.get("BENCH_THREADS", "1,2").split(",")]
    load_start = time.perf_counter()
    adapter = load_adapter(num_steps=25)
    load_s = time.perf_counter() - load_start
    params = sum(p.numel() for p in adapter.unet.parameters()) + sum(
        p.numel() for p in adapter.text_encoder.parameters()
    )
    size_mb = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(DEFAULT_MODEL_PATH) for f in fs) / 1e6
    payload = {
        "model": os.path.relpath(DEFAULT_MODEL_PATH, os.path.dirname(os.path.dirname(__file__))),
        "model_parameters": params,
        "model_size_mb": round(size_mb, 2),
        "load_seconds": round(load_s, 3),
        "num_steps": 25,
        "eta": 1.0,
        "guidance_scale": DEFAULT_GUIDANCE_SCALE,
        "targets_seconds": {"sample_32_images": 10, "das_8_prompts_4_particles": 60},
        "by_threads": {str(t): _measure(adapter, t) for t in thread_counts},
    }
    path = _write(payload)
    print(path)
    print(json.dumps(payload, indent=1))


if __name__ == "__main__":
    main()
