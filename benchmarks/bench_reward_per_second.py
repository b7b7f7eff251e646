"""Reward per second, the test-time-scaling curve: ``python -m benchmarks.bench_reward_per_second [--quick]``.

Every method below runs at several particle counts ``K`` and is scored against its wall time:

* DAS with each proposal gradient of :mod:`das.proposals` (``das_full``, the paper's; the
  cheaper ones; ``gradient_free``, the pretrained proposal);
* ``best_of_n``: ``K`` samples per prompt from the pretrained chain, the best by reward kept;
* ``guidance``: plain reward guidance, the gradient-shifted chain with no weights and no
  resampling (as :mod:`das.toy.demo`); every particle is a sample, scored by their mean reward.

on three settings:

* ``toy``: the 2-D nine-Gaussian prior with the paper's reward at α = 1, 100 steps; one
  sample per independent run (drawn by weight), the EMD of the samples to the exact tilted
  target over the floor (the EMD between two draws of the target), and their mean reward;
* ``world``: the embedded world's model (``world.model.load_adapter()``) towards colourfulness
  at α = 5 (the world's config), the reward of the selected sample averaged over the prompts;
* ``sd``: the SD-proportioned tiny components of ``benchmarks.bench_das_sd`` at 1 prompt ×
  4 particles, each method's time over that benchmark's floor (medians of interleaved runs).

and checks the issue's acceptance: the cheapest proposal (by its SD time) whose toy EMD stays
≤ 1.2× the floor must run in ≤ 0.7× the floor's time on the SD components and, on the world,
reach at least full-gradient DAS's reward at equal wall time. Equal wall time: full DAS's
reward at the candidate's time, interpolated linearly in log(seconds) between full DAS's
particle counts; a candidate point faster than full DAS's fastest is compared with that
fastest point. Writes ``benchmarks/results/reward_per_second.json`` and ``.png``.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import numpy as np
import torch

from benchmarks.common import RESULTS, write_result
from das.proposals import GradientOptions

#: DAS's proposals: name -> the sampler's gradient options.
PROPOSALS = {
    "das_full": GradientOptions("full"),
    "jacobian_free_after_0.5": GradientOptions("jacobian_free", after=0.5),
    "jacobian_free_late": GradientOptions("jacobian_free", after=0.75, every=2, reuse=True),
    "full_every_3": GradientOptions("full", every=3),
    "full_after_0.5": GradientOptions("full", after=0.5),
    "gradient_free": GradientOptions("none"),
}
BASELINES = ("best_of_n", "guidance")
TOY_EMD_LIMIT, SD_TIME_LIMIT = 1.2, 0.7


# ---------------------------------------------------------------- one method, one call
def pretrained_images(adapter, prompts: list[str], particles: int, generator: torch.Generator) -> torch.Tensor:
    """``K`` decoded samples per prompt from the pretrained chain, `(B·K, ...)`, no reward on the way."""
    cond = {k: v.repeat_interleave(particles, 0) for k, v in adapter.encode_prompts(prompts).items()}
    x = adapter.initial_noise(len(prompts) * particles, generator)
    with torch.no_grad():
        for step in range(adapter.num_steps):
            transition = adapter.transition(x, step, cond)
            noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
            x = transition.mean + transition.std * noise
        return adapter.decode(x)


def run_method(name: str, adapter, reward, alpha: float, options: dict, prompts, particles: int, seed: int):
    """One call of method `name` with `options` (fields of :class:`das.DASSettings`): ``(seconds, per-prompt output
    (B, ...), per-prompt reward (B,))``."""
    from das.smc import DASSampler, DASSettings

    generator = torch.Generator().manual_seed(seed)
    b = len(prompts)
    start = time.perf_counter()
    if name == "best_of_n":
        images = pretrained_images(adapter, list(prompts), particles, generator)
        with torch.no_grad():
            rewards = reward(images, [p for p in prompts for _ in range(particles)]).view(b, particles)
        best = rewards.argmax(-1)
        out = images.view(b, particles, *images.shape[1:])[torch.arange(b), best]
        return time.perf_counter() - start, out, rewards.max(-1).values
    if name == "guidance":
        options = dict(options, tempering="none", ess_threshold=0.0, selection="all")
    sampler = DASSampler(adapter, DASSettings(kl_coeff=alpha, num_particles=particles, **options))
    result = sampler.sample(list(prompts), reward, generator)
    seconds = time.perf_counter() - start
    if name == "guidance":  # every particle is a sample: the first per prompt, the mean reward
        return seconds, result.images[:, 0], result.rewards.mean(-1)
    return seconds, result.selected, result.rewards.gather(1, result.selected_index.view(b, 1)).squeeze(1)


def method_options(name: str) -> dict:
    """The :class:`das.DASSettings` fields of a method: its gradient options (guidance: the full gradient)."""
    return {"gradient": PROPOSALS.get(name, PROPOSALS["das_full"])}


# ---------------------------------------------------------------- the settings
def toy_curves(particle_counts: list[int], samples: int, methods: list[str], seeds: int) -> dict:
    """The nine-Gaussian toy: per method and ``K``, over `seeds` runs, the median seconds and the mean EMD over the
    floor and reward (a 500-point EMD moves by ±30% from seed to seed, full DAS's too)."""
    from das.toy import emd, nine_gaussians, paper_toy_reward, tilt_quadratic
    from das.toy.adapter import ToyAdapter

    prior, reward, alpha = nine_gaussians(), paper_toy_reward(), 1.0
    target, _ = tilt_quadratic(prior, reward, alpha)
    adapter = ToyAdapter(prior, num_steps=100, eta=1.0)
    generator = torch.Generator().manual_seed(1)
    references = [target.sample(samples, generator) for _ in range(10)]
    floor = float(np.mean([emd(target.sample(samples, generator), ref) for ref in references]))
    curves = {}
    for name in methods:
        options = method_options(name)
        if name not in BASELINES:
            options["selection"] = "sample"
        curves[name] = []
        for k in particle_counts:
            runs = [
                run_method(name, adapter, reward, alpha, options, [""] * samples, k, seed) for seed in range(seeds)
            ]
            ratio = float(np.mean([emd(out, ref) for _, out, _ in runs for ref in references])) / floor
            seconds = statistics.median(run[0] for run in runs)
            reward_mean = float(np.mean([float(run[2].mean()) for run in runs]))
            curves[name].append({"particles": k, "seconds": seconds, "emd_over_floor": ratio, "reward": reward_mean})
            print(f"toy {name} K={k}: {seconds:.2f} s, EMD/floor {ratio:.3f}", flush=True)
    return {"floor_emd": floor, "samples": samples, "seeds": seeds, "curves": curves}


def world_curves(particle_counts: list[int], num_prompts: int, methods: list[str], counts: dict, repeats: int) -> dict:
    """The embedded world towards colourfulness: per method and ``K`` (`counts` overrides a method's list),
    the median seconds of `repeats` runs (methods interleaved within each ``K``) and the selected sample's reward."""
    from das.rewards.colorfulness import ColorfulnessReward
    from das.tempering import ExponentialTempering
    from world import PROMPTS
    from world.model import load_adapter

    adapter, reward, alpha = load_adapter(), ColorfulnessReward(), 5.0
    prompts = list(PROMPTS[:num_prompts])
    curves = {name: [] for name in methods}
    for k in sorted({k for name in methods for k in counts.get(name, particle_counts)}):
        runs = {name: [] for name in methods if k in counts.get(name, particle_counts)}
        for _ in range(repeats):
            for name in runs:
                options = dict(method_options(name), tempering=ExponentialTempering(gamma=0.1))
                runs[name].append(run_method(name, adapter, reward, alpha, options, prompts, k, seed=0))
        for name, calls in runs.items():
            seconds, reward_mean = statistics.median(c[0] for c in calls), float(calls[0][2].mean())
            curves[name].append({"particles": k, "seconds": seconds, "reward": reward_mean})
            print(f"world {name} K={k}: {seconds:.2f} s, reward {reward_mean:.2f}", flush=True)
    return {"prompts": prompts, "kl_coeff": alpha, "repeats": repeats, "curves": curves}


def sd_times(particles: int, repeats: int, methods: list[str]) -> dict:
    """Each method's median seconds at 1 prompt × `particles` on the SD-proportioned components, over the floor."""
    from benchmarks.bench_das_sd import GUIDANCE, STEPS, _timed_functions, brightness, interleaved_medians
    from das.adapters.stable_diffusion import StableDiffusionAdapter
    from das.rewards import FunctionReward
    from tests.tiny_components import tiny_sd_pipeline

    pipe = tiny_sd_pipeline(proportioned=True)
    pipe.set_progress_bar_config(disable=True)
    adapter = StableDiffusionAdapter(pipe, num_steps=STEPS, guidance_scale=GUIDANCE)
    reward = FunctionReward(brightness, differentiable=True, name="brightness")
    prompts = ["a cat"]
    fns = {"floor": _timed_functions(pipe, adapter, None, reward, prompts, particles)["floor"]}
    for name in methods:
        options = method_options(name)
        fns[name] = lambda n=name, o=options: run_method(n, adapter, reward, 0.005, o, prompts, particles, 0)
    timed = interleaved_medians(fns, repeats, warm_up=True)
    floor = timed["floor"]["median"]
    rows = {name: {"seconds": t["median"], "over_floor": t["median"] / floor} for name, t in timed.items()}
    for name, row in rows.items():
        print(f"sd {name}: {row['seconds']:.2f} s, {row['over_floor']:.3f} x floor", flush=True)
    return {"prompts": len(prompts), "particles": particles, "repeats": repeats, "rows": rows}


# ---------------------------------------------------------------- acceptance
def reward_at(points: list[dict], seconds: float) -> float:
    """A curve's reward at `seconds`: linear in log(seconds) between its points, its first point's below them,
    NaN beyond them."""
    points = sorted(points, key=lambda p: p["seconds"])
    times = [math.log(p["seconds"]) for p in points]
    if seconds <= points[0]["seconds"]:
        return points[0]["reward"]
    if seconds > points[-1]["seconds"]:
        return float("nan")
    return float(np.interp(math.log(seconds), times, [p["reward"] for p in points]))


def world_check(candidate: list[dict], full: list[dict]) -> dict:
    """The candidate's world points against full DAS's reward at the same wall time."""
    compared = []
    for point in candidate:
        reference = reward_at(full, point["seconds"])
        if not math.isnan(reference):
            compared.append({**point, "full_das_reward_at_equal_time": reference, "ok": point["reward"] >= reference})
    return {"points": compared, "ok": bool(compared) and all(p["ok"] for p in compared)}


def acceptance(toy: dict, world: dict, sd: dict) -> dict:
    """The issue's criterion, figure by figure, for every cheaper DAS proposal."""
    per_candidate = {}
    for name in PROPOSALS:
        if name == "das_full" or name not in sd["rows"]:
            continue
        toy_ratio = toy["curves"][name][-1]["emd_over_floor"] if name in toy["curves"] else float("nan")
        world_fig = world_check(world["curves"][name], world["curves"]["das_full"]) if name in world["curves"] else {}
        per_candidate[name] = {
            "toy_emd_over_floor_at_largest_k": toy_ratio,
            "sd_time_over_floor": sd["rows"][name]["over_floor"],
            "world_at_equal_time": world_fig,
        }
    passing = [n for n, c in per_candidate.items() if c["toy_emd_over_floor_at_largest_k"] <= TOY_EMD_LIMIT]
    summary = {"candidates": per_candidate, "toy_emd_limit": TOY_EMD_LIMIT, "sd_time_limit": SD_TIME_LIMIT}
    for label, pool in (
        ("cheapest", passing),
        ("cheapest_with_gradient", [n for n in passing if n != "gradient_free"]),
    ):
        if not pool:
            summary[label] = None
            continue
        best = min(pool, key=lambda n: per_candidate[n]["sd_time_over_floor"])
        fig = per_candidate[best]
        summary[label] = {
            "proposal": best,
            "options": PROPOSALS[best],
            "sd_ok": fig["sd_time_over_floor"] <= SD_TIME_LIMIT,
            "world_ok": bool(fig["world_at_equal_time"].get("ok", False)),
        }
    summary["interpolation"] = (
        "full-gradient DAS's world reward at the candidate's wall time, linear in log(seconds) between its particle "
        "counts; candidate points faster than full DAS's fastest are compared with that fastest point, points "
        "slower than its slowest are left out"
    )
    return summary


# ---------------------------------------------------------------- output
def plot(payload: dict, path) -> None:
    """Four panels: toy EMD/floor and reward, world reward against seconds; SD time over the floor."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, axes = plt.subplots(1, 4, figsize=(22, 4.8))
    panels = [("toy", "emd_over_floor", "toy: EMD / floor"), ("toy", "reward", "toy: reward"), ("world", "reward", "")]
    for ax, (setting, key, title) in zip(axes, panels, strict=False):
        for name, points in payload.get(setting, {}).get("curves", {}).items():
            ax.plot([p["seconds"] for p in points], [p[key] for p in points], marker="o", label=name)
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())  # unlabelled minor ticks: no overlap
        ax.set_xlabel("wall seconds")
        ax.set_title(title or "world: colourfulness of the selected sample")
    axes[0].axhline(TOY_EMD_LIMIT, color="grey", linestyle="--")
    axes[0].legend(fontsize=7)
    rows = payload.get("sd", {}).get("rows", {})
    axes[3].barh(list(rows), [r["over_floor"] for r in rows.values()])
    axes[3].axvline(SD_TIME_LIMIT, color="grey", linestyle="--")
    axes[3].set_title(f"SD components, 1 x {payload.get('sd', {}).get('particles')}: time / floor")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="a smoke run: fewer particles, samples and repeats")
    p.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    p.add_argument("--world-repeats", type=int, default=1, help="timed runs per world point (median; default 1)")
    p.add_argument("--parts", nargs="+", default=["toy", "world", "sd"], choices=["toy", "world", "sd"])
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    methods = [*PROPOSALS, *BASELINES]
    quick = args.quick
    started = time.perf_counter()
    payload = {"benchmark": "reward_per_second", "quick": quick, "methods": methods}
    if "toy" in args.parts:
        payload["toy"] = toy_curves(
            [2, 8] if quick else [4, 16, 64], 100 if quick else 500, methods, 1 if quick else 3
        )
    if "world" in args.parts:
        # the cheap proposals go on to K = 16 to overlap full DAS's times; guidance costs as much as full DAS
        counts = {name: [2, 4, 8, 16] for name in ("jacobian_free_after_0.5", "jacobian_free_late", "gradient_free")}
        counts["guidance"] = [2, 4]
        world_args = ([2], 1, methods, {}, 1) if quick else ([2, 4, 8], 4, methods, counts, args.world_repeats)
        payload["world"] = world_curves(*world_args)
    if "sd" in args.parts:
        payload["sd"] = sd_times(2 if quick else 4, 1 if quick else 3, methods)
    if {"toy", "world", "sd"} <= set(args.parts):
        payload["acceptance"] = acceptance(payload["toy"], payload["world"], payload["sd"])
    payload["total_seconds"] = time.perf_counter() - started
    name = "reward_per_second_quick" if quick else "reward_per_second"
    path = write_result(name, payload)
    plot(payload, RESULTS / f"{name}.png")
    print(f"wrote {path} and {name}.png")
    if "acceptance" in payload:
        print("cheapest:", payload["acceptance"]["cheapest"])
        print("cheapest with a gradient:", payload["acceptance"]["cheapest_with_gradient"])


if __name__ == "__main__":
    main()
