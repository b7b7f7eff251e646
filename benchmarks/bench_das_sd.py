"""DAS against its autograd floor on SD-proportioned tiny components: ``python -m benchmarks.bench_das_sd``.

The components are random Stable Diffusion parts closer to SD's proportions than the tests'
(``tests.tiny_components.tiny_sd_pipeline(proportioned=True)``: UNet channels (32, 64) with
2 layers per block, cross-attention 32, latents 4×32×32, VAE channels (32, 64), 64×64
images). 20 DDIM steps, CFG 5, one differentiable reward (the decoded image's mean
brightness), 2 threads by default. For each (prompts × particles) row it times, interleaved
so that load changes on a shared machine hit all alike:

* ``das``: ``DASSampler.sample`` (K particles per prompt, all prompts in one call);
* ``floor``: 20 × (guided UNet forward at every particle + x̂0 + decode + reward + backward),
  the autograd work any gradient-guided sampler must do, at ``x_T`` on every step;
* ``floor_das_particles`` (with ``--particle-floor``): the same work at the particles DAS
  itself evaluates at each step (recorded from one untimed call), since the kernels' cost
  depends a little on the data (DAS's latents grow to a std of ~13 under this reward);
* ``plain``: the diffusers pipeline sampling the same number of images without a reward.

and reports medians. Writes ``benchmarks/results/das_sd.json`` (a ``rows`` list).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from benchmarks.common import write_result

STEPS, GUIDANCE = 20, 5.0
PROMPTS = ["a cat", "a dog", "a horse", "a zebra", "a red car", "a blue boat", "a green tree", "a yellow house"]
BLOCK_OUT_CHANNELS = (32, 64)


def brightness(images: torch.Tensor, prompts=None) -> torch.Tensor:
    return images.mean(dim=(1, 2, 3))


def _das_particles(adapter, sampler, reward, prompts: list[str]) -> list[torch.Tensor]:
    """The particles DAS evaluates at each step of one call (same seed as the timed calls)."""
    seen, transition = [], adapter.transition

    def recording(x, step, cond):
        seen.append(x.detach().clone())
        return transition(x, step, cond)

    adapter.transition = recording
    try:
        sampler.sample(prompts, reward, torch.Generator().manual_seed(0))
    finally:
        del adapter.transition
    return seen


def _floor(adapter, alphas, cond, inputs: list[torch.Tensor]) -> None:
    """The floor's work: at each step, guided UNet forward + x̂0 + decode + reward + backward at `inputs[step]`."""
    for step in range(STEPS):
        x = inputs[step].detach().requires_grad_(True)
        eps = adapter.model_output(x, step, cond)
        a = alphas[int(adapter.scheduler.timesteps[step])]
        x0 = (x - (1 - a).sqrt() * eps) / a.sqrt()
        reward = brightness(adapter.decode(x0))
        torch.autograd.grad(reward.sum(), x)


def _timed_functions(
    pipe, adapter, sampler, reward, prompts: list[str], particles: int, particle_floor: bool = False
) -> dict:
    """The functions a row times, closed over one set of inputs (``floor_das_particles`` if asked for)."""
    rows = len(prompts) * particles
    cond = {k: v.repeat_interleave(particles, 0) for k, v in adapter.encode_prompts(prompts).items()}
    x_start = adapter.initial_noise(rows, torch.Generator().manual_seed(0))
    alphas = pipe.scheduler.alphas_cumprod

    def das():
        sampler.sample(prompts, reward, torch.Generator().manual_seed(0))

    def floor():
        _floor(adapter, alphas, cond, [x_start] * STEPS)

    def plain():
        with torch.no_grad():
            pipe(
                prompt=prompts,
                num_images_per_prompt=particles,
                num_inference_steps=STEPS,
                guidance_scale=GUIDANCE,
                eta=1.0,
                generator=torch.Generator().manual_seed(0),
                output_type="pt",
            )

    fns = {"das": das, "floor": floor, "plain": plain}
    if particle_floor:
        particles_seen = _das_particles(adapter, sampler, reward, prompts)
        fns["floor_das_particles"] = lambda: _floor(adapter, alphas, cond, particles_seen)
    return fns


def interleaved_medians(fns: dict, repeats: int, warm_up: bool) -> dict:
    """Median seconds of each function over `repeats` interleaved rounds (after one warm-up round if asked)."""
    if warm_up:
        for fn in fns.values():
            fn()
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: {"median": statistics.median(t), "all": t} for name, t in times.items()}


def measure_row(num_prompts: int, particles: int, repeats: int, warm_up: bool, particle_floor: bool = False) -> dict:
    from das import DASSampler, DASSettings
    from das.adapters.stable_diffusion import StableDiffusionAdapter
    from das.rewards import FunctionReward
    from tests.tiny_components import tiny_sd_pipeline

    pipe = tiny_sd_pipeline(proportioned=True)
    pipe.set_progress_bar_config(disable=True)
    adapter = StableDiffusionAdapter(pipe, num_steps=STEPS, guidance_scale=GUIDANCE)
    reward = FunctionReward(brightness, differentiable=True, name="brightness")
    sampler = DASSampler(adapter, DASSettings(kl_coeff=0.005, num_particles=particles))
    prompts = PROMPTS[:num_prompts]
    fns = _timed_functions(pipe, adapter, sampler, reward, prompts, particles, particle_floor)
    timed = interleaved_medians(fns, repeats, warm_up)
    das, floor, plain = (timed[name]["median"] for name in ("das", "floor", "plain"))
    row = {
        "prompts": num_prompts,
        "particles": particles,
        "block_out_channels": list(BLOCK_OUT_CHANNELS),
        "latent": list(adapter.latent_shape),
        "das_seconds": das,
        "floor_seconds": floor,
        "plain_seconds": plain,
        "das_over_floor": das / floor,
        "das_over_plain": das / plain,
        "seconds_each_run": {name: timed[name]["all"] for name in timed},
    }
    if particle_floor:
        row["floor_das_particles_seconds"] = timed["floor_das_particles"]["median"]
        row["das_over_floor_das_particles"] = das / row["floor_das_particles_seconds"]
    return row


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    p.add_argument("--repeats", type=int, default=3, help="interleaved timed runs per row (default 3)")
    p.add_argument("--rows", nargs="+", default=["1x4", "8x4"], help="prompts x particles per row (default 1x4 8x4)")
    p.add_argument(
        "--particle-floor", action="store_true", help="also time the floor at the particles DAS visits (its inputs)"
    )
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = []
    for index, text in enumerate(args.rows):
        num_prompts, particles = (int(v) for v in text.lower().split("x"))
        row = measure_row(num_prompts, particles, args.repeats, warm_up=index == 0, particle_floor=args.particle_floor)
        print(
            f"{num_prompts} x {particles}: das {row['das_seconds']:.2f} s, floor {row['floor_seconds']:.2f} s, "
            f"plain {row['plain_seconds']:.2f} s -> das/floor {row['das_over_floor']:.3f}, "
            f"das/plain {row['das_over_plain']:.2f}"
            + (
                f", das/floor at DAS's particles {row['das_over_floor_das_particles']:.3f}"
                if args.particle_floor
                else ""
            )
        )
        rows.append(row)
    settings = {"steps": STEPS, "guidance_scale": GUIDANCE, "repeats": args.repeats, "statistic": "median"}
    path = write_result("das_sd", {"benchmark": "das_sd", "settings": settings, "rows": rows, "target": 1.03})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
