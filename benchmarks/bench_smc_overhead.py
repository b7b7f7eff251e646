"""SMC bookkeeping overhead on the toy adapter.

Bookkeeping is the time of the sampler minus the time of the model and reward calls it
makes (transition, decode, reward forward and backward at every step): resampling, ESS,
tempering, proposal arithmetic, weights and traces. Both are measured in the same run,
interleaved, median of several repeats, for B = 8 prompts × K = 16 particles.

Run: ``python -m benchmarks.bench_smc_overhead`` → ``benchmarks/results/smc_overhead.json``.
"""

from __future__ import annotations

import statistics
import time

import torch

from benchmarks.common import write_result
from das.smc import DASSampler, DASSettings
from das.toy import GaussianMixture, QuadraticReward, nine_gaussians, paper_toy_reward
from das.toy.adapter import ToyAdapter

B, K, STEPS, REPEATS = 8, 16, 50, 11


def _model_and_reward_only(sampler: DASSampler, prompts: list[str], reward, generator: torch.Generator) -> None:
    """Exactly the model and reward work of one sampler call, with no SMC around it."""
    adapter = sampler.adapter
    batch = sampler._batch(prompts)
    strategy = sampler.proposal_gradient(reward)
    x = adapter.initial_noise(len(batch.row_prompts), generator)
    for step in range(adapter.num_steps):
        current = sampler._evaluate(x, step, batch, reward, strategy)
        x = current.mean
    sampler._final_reward(x, batch.row_prompts, reward)


def measure(adapter: ToyAdapter, reward, resampling: str) -> dict:
    sampler = DASSampler(adapter, DASSettings(kl_coeff=1.0, num_particles=K, resampling=resampling))
    prompts = [f"prompt {i}" for i in range(B)]
    totals, models = [], []
    for repeat in range(REPEATS + 1):
        start = time.perf_counter()
        sampler.sample(prompts, reward, torch.Generator().manual_seed(repeat))
        total = time.perf_counter() - start
        start = time.perf_counter()
        _model_and_reward_only(sampler, prompts, reward, torch.Generator().manual_seed(repeat))
        model = time.perf_counter() - start
        if repeat:  # the first round warms up
            totals.append(total)
            models.append(model)
    total, model = statistics.median(totals), statistics.median(models)
    return {
        "resampling": resampling,
        "sampler_seconds": total,
        "model_and_reward_seconds": model,
        "bookkeeping_ms_per_step": 1000 * (total - model) / adapter.num_steps,
        "bookkeeping_fraction": (total - model) / total,
    }


def main() -> None:
    generator = torch.Generator().manual_seed(0)
    latent_dim = 3 * 32 * 32  # an embedded-world image, flattened
    components = 8
    latent_prior = GaussianMixture(
        torch.randn(components, latent_dim, generator=generator),
        torch.full((components, latent_dim), 0.3),
        torch.zeros(components),
    )
    cases = {
        "toy_2d_nine_gaussians": (nine_gaussians(), paper_toy_reward()),
        "toy_3072d_8_gaussians": (latent_prior, QuadraticReward(torch.full((latent_dim,), 1e-3))),
    }
    results = {}
    for name, (prior, reward) in cases.items():
        adapter = ToyAdapter(prior, num_steps=STEPS)
        results[name] = [measure(adapter, reward, scheme) for scheme in ("ssp", "systematic")]
        for row in results[name]:
            print(
                f"{name:<26s} {row['resampling']:<10s} bookkeeping {100 * row['bookkeeping_fraction']:5.1f}% "
                f"({row['bookkeeping_ms_per_step']:.2f} ms/step of {1000 * row['sampler_seconds'] / STEPS:.2f})"
            )
    path = write_result(
        "smc_overhead", {"B": B, "K": K, "steps": STEPS, "repeats": REPEATS, "target_fraction": 0.10, "cases": results}
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
