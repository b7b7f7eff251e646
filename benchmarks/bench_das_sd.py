"""DAS overhead on tiny Stable Diffusion components: ``python -m benchmarks.bench_das_sd``.

B = 4 prompts × K = 4 particles, 20 steps, a differentiable reward (mean brightness through
the VAE decode). Reports DAS time over the "floor" — 20 × (one batched guided UNet forward
+ decode + reward forward + backward), measured in the same run — and DAS time over plain
pipeline sampling of the same B·K images. Writes ``benchmarks/results/das_sd.json``.
"""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from das import DASSampler
from das.adapters.stable_diffusion import StableDiffusionAdapter
from das.rewards import FunctionReward
from tests.tiny_components import tiny_sd_pipeline

B, K, STEPS, REPEATS = 4, 4, 20, 2
PROMPTS = ["a cat", "a dog", "a horse", "a zebra"]


def interleaved_best(fns: dict, repeats=REPEATS) -> dict:
    """Min time of each function, runs interleaved so that load changes on a shared machine hit all alike."""
    for fn in fns.values():
        fn()  # warm-up
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: min(t) for name, t in times.items()}


def main() -> None:
    pipe = tiny_sd_pipeline()
    adapter = StableDiffusionAdapter(pipe, num_steps=STEPS, guidance_scale=5.0)
    reward = FunctionReward(lambda images: images.mean(dim=(1, 2, 3)), differentiable=True, name="brightness")
    sampler = DASSampler(adapter, reward, kl_coeff=0.005, num_particles=K)

    def das():
        sampler.sample(PROMPTS, torch.Generator().manual_seed(0))

    cond = {k: v.repeat_interleave(K, 0) for k, v in adapter.encode_prompts(PROMPTS).items()}
    x0 = adapter.initial_noise(B * K, torch.Generator().manual_seed(0))
    prompts = [p for p in PROMPTS for _ in range(K)]

    def floor():
        for step in range(STEPS):
            x = x0.detach().requires_grad_(True)
            out = adapter.model_output(x, step, cond)
            r = reward(adapter.decode(out), prompts)
            torch.autograd.grad(r.sum(), x)

    def plain():
        with torch.no_grad():
            pipe(
                prompt=PROMPTS,
                num_images_per_prompt=K,
                num_inference_steps=STEPS,
                guidance_scale=5.0,
                eta=1.0,
                generator=torch.Generator().manual_seed(0),
                output_type="pt",
            )

    pipe.set_progress_bar_config(disable=True)
    from diffusers import DDIMScheduler

    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    timed = interleaved_best({"das": das, "floor": floor, "plain": plain})
    das_time, floor_time, plain_time = timed["das"], timed["floor"], timed["plain"]

    result = {
        "benchmark": "das_sd",
        "setup": {
            "prompts": B,
            "particles": K,
            "steps": STEPS,
            "components": "tiny random SD (tests/tiny_components.py)",
            "latent": list(adapter.latent_shape),
            "guidance_scale": 5.0,
            "repeats": REPEATS,
            "statistic": "min, interleaved runs",
        },
        "das_seconds": das_time,
        "floor_seconds": floor_time,
        "plain_pipeline_seconds": plain_time,
        "das_over_floor": das_time / floor_time,
        "das_over_floor_target": 1.15,
        "das_over_plain_pipeline": das_time / plain_time,
        "torch_version": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "device": "cpu",
        "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    out = Path(__file__).resolve().parent / "results" / "das_sd.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    tmp.replace(out)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
