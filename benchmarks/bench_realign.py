"""DeRaDiff realignment on the exact toys, and its cost per sample.

Toy table (nine and eight Gaussians, paper reward, aligned model at α = 1, so the
"aligned model" is the exact tilted mixture with exact noisy scores), for
λ ∈ {0.25, 0.5, 1, 2}, target ``p_ref · exp(λ r/α)`` (strength α/λ). Each entry is the EMD
to exact target draws (mean over 8 sets of 500 samples, with its standard error), and
its ratio to the floor (the mean EMD between two independent exact draws of 500):

* ``realigned``: the realigned chain (DeRaDiff) alone;
* ``from_scratch``: the chain of the model aligned at α/λ directly;
* ``das_half``: DAS (:class:`DASSampler`) over the realigned chain at λ/2 with the reward
  at strength 2α/λ (the base carries half the tilt, DAS adds the other half);
* ``das_from_aligned``: DAS over the aligned model (λ_b = 1) with the residual strength
  α/|λ − 1| (the reward negated for λ < 1); absent at λ = 1;
* ``das_double_tilt``: DAS over the realigned chain at λ with the reward at α/λ, which tilts
  twice (strength α/(2λ)): the wrong composition, for the record;
* ``das_realigned_proposal``: the issue's bar, the exact scheme: ``DASSampler(reference,
  DASSettings(kl_coeff=α/λ), proposal_adapter=realigned chain at λ)``, so the target path is the
  reference chain twisted by ``r/α'`` (``α' = α/λ``) and the realigned transition only moves
  the particles (weights ``log p_ref − log p_λ + ψ_{t−1} − ψ_t``); no gradient shift and no
  tempering, since the realigned chain already carries the tilt;
* ``das_realigned_proposal_gradient``: the same with DAS's defaults on top (the reward
  gradient shift and exponential tempering), for the record;
* ``smc_realigned_proposal``: the standalone prototype of the same scheme that preceded the
  ``proposal_adapter`` option, kept as a cross-check (it reads the twist from the realigned
  Tweedie estimate instead of the reference's).

SMC runs follow the DAS paper's protocol: ``SET · SETS`` independent runs (prompts) of
``PARTICLES`` particles, each returning one particle drawn by weight. (Many draws from one
run's weighted particles are not independent samples: after resampling they share a few
ancestors, and their mode proportions are those of one run.)

Timing: time per sample of plain sampling (``das.ancestral.sample_images``) through
the realigned adapter vs the reference adapter, interleaved in one run, median of repeats,
on the toy and on the shipped pixel world model (a second copy of it as the "aligned" side).

Run: ``python -m benchmarks.bench_realign`` → ``benchmarks/results/realign.json``.
"""

from __future__ import annotations

import math
import statistics
import time

import numpy as np
import torch

from benchmarks.common import write_result
from das.adapters.realigned import RealignedAdapter
from das.ancestral import sample_images
from das.proposals import GradientOptions
from das.resampling import effective_sample_size, get_resampler, normalize_with_log_sum
from das.rewards import FunctionReward
from das.smc import DASSampler, DASSettings
from das.toy import GaussianMixture, eight_gaussians, emd, nine_gaussians, paper_toy_reward, tilt_quadratic
from das.toy.adapter import ToyAdapter

ALPHA = 1.0
LAMBDAS = (0.25, 0.5, 1.0, 2.0)
STEPS = 100
SET, SETS = 500, 8
PARTICLES = 16


def _emds(samples: torch.Tensor, target: GaussianMixture, generator: torch.Generator) -> list[float]:
    """EMD of each `SET`-point slice of `samples` to a fresh exact draw of the target."""
    return [emd(s, target.sample(SET, generator)) for s in samples.reshape(-1, SET, samples.shape[-1])]


def _floors(target: GaussianMixture, generator: torch.Generator) -> list[float]:
    """EMD between two independent exact draws of `SET` points, `SETS` times."""
    return [emd(target.sample(SET, generator), target.sample(SET, generator)) for _ in range(SETS)]


def _summary(values: list[float], floor: float) -> dict:
    mean, error = float(np.mean(values)), float(np.std(values, ddof=1) / math.sqrt(len(values)))
    return {"emd": mean, "emd_stderr": error, "emd_over_floor": mean / floor, "emd_over_floor_stderr": error / floor}


def _chain(adapter, generator: torch.Generator) -> torch.Tensor:
    return sample_images(adapter, [""] * (SET * SETS), generator, batch_size=SET * SETS)


def _das(base, reward, kl_coeff: float, generator: torch.Generator) -> tuple[torch.Tensor, float]:
    """One draw by weight from each of ``SET · SETS`` independent DAS runs, and the mean final ESS."""
    settings = DASSettings(kl_coeff=kl_coeff, num_particles=PARTICLES, selection="sample")
    result = DASSampler(base, settings).sample([""] * (SET * SETS), reward, generator)
    return result.selected, float(result.ess[-1].mean())


def _das_with_proposal(
    reference, realigned, reward, kl_coeff: float, generator: torch.Generator, gradient: bool
) -> tuple[torch.Tensor, float]:
    """DAS towards ``p_ref · exp(r/α')`` moving by the realigned chain: one draw by weight per run, mean final ESS."""
    options = {} if gradient else {"gradient": GradientOptions("none"), "tempering": "none"}
    settings = DASSettings(kl_coeff=kl_coeff, num_particles=PARTICLES, selection="sample", **options)
    result = DASSampler(reference, settings, proposal_adapter=realigned).sample([""] * (SET * SETS), reward, generator)
    return result.selected, float(result.ess[-1].mean())


def smc_with_realigned_proposal(
    reference: ToyAdapter, realigned: RealignedAdapter, reward, kl_coeff: float, generator: torch.Generator
) -> tuple[torch.Tensor, float]:
    """Prototype: SMC towards ``p_ref · exp(r/α')`` with the realigned transition as proposal.

    Target path: the reference chain, twisted by ``ψ_t = r(x̂0_λ(x_t))/α'`` (the realigned
    Tweedie estimate) and by the exact ``r(x_0)/α'`` at the end; no tempering, SSP
    resampling at ESS < K/2. A draw ``x = μ_λ + σ z`` has
    ``log p_ref(x) − log p_λ(x) = (‖z‖² − ‖z + (μ_λ − μ_ref)/σ‖²)/2``. Steps with σ = 0
    (DDIM's last) follow the reference mean, where the two paths must agree.

    Returns:
        One draw by weight from each of ``SET · SETS`` independent runs, and the mean final ESS.
    """
    b, k = SET * SETS, PARTICLES
    resample = get_resampler("ssp")
    offsets = (torch.arange(b) * k).unsqueeze(-1)
    identity = torch.arange(k).expand(b, k)

    def evaluate(x, step):
        out_ref = reference.model_output(x, step, {})
        out_mix = realigned.model_output(x, step, {})
        ref = reference.transition_from_output(out_ref, step, x)
        mix = realigned.transition_from_output(out_mix, step, x)
        return ref.mean, mix.mean, ref.std, reward(mix.x0_hat) / kl_coeff

    with torch.no_grad():
        x = realigned.initial_noise(b * k, generator)
        mean_ref, mean_mix, std, psi = evaluate(x, 0)
        log_w, _ = normalize_with_log_sum(psi.view(b, k))
        for step in range(reference.num_steps):
            ess = effective_sample_size(log_w, normalized=True)
            again = ess < 0.5 * k
            if bool(again.any()):
                rows = (torch.where(again.unsqueeze(-1), resample(log_w, generator), identity) + offsets).reshape(-1)
                x, mean_ref, mean_mix, psi = x[rows], mean_ref[rows], mean_mix[rows], psi[rows]
                log_w = torch.where(again.unsqueeze(-1), torch.full_like(log_w, -math.log(k)), log_w)
            if float(std) > 0:
                z = torch.randn(x.shape, generator=generator, dtype=x.dtype)
                shift = (mean_mix - mean_ref) / std
                x = mean_mix + std * z
                log_ratio = 0.5 * ((z**2).sum(-1) - ((z + shift) ** 2).sum(-1))
            else:
                x, log_ratio = mean_ref, torch.zeros(b * k, dtype=x.dtype)
            if step == reference.num_steps - 1:
                new_psi = reward(x) / kl_coeff
            else:
                mean_ref, mean_mix, std, new_psi = evaluate(x, step + 1)
            log_w, _ = normalize_with_log_sum(log_w + (log_ratio + new_psi - psi).view(b, k))
            psi = new_psi
    final_ess = float(effective_sample_size(log_w, normalized=True).mean())
    index = torch.multinomial(log_w.double().exp(), 1, generator=generator).squeeze(-1)
    return x.view(b, k, -1)[torch.arange(b), index], final_ess


def toy_table() -> dict:
    reward = paper_toy_reward()
    negated = FunctionReward(lambda x: -reward(x), differentiable=True, name="negated_paper_toy")
    table = {}
    for name, prior in (("nine_gaussians", nine_gaussians()), ("eight_gaussians", eight_gaussians())):
        aligned_prior, _ = tilt_quadratic(prior, reward, ALPHA)
        reference = ToyAdapter(prior, num_steps=STEPS)
        aligned = ToyAdapter(aligned_prior, num_steps=STEPS)
        rows = {}
        for lam in LAMBDAS:
            start = time.perf_counter()
            target, _ = tilt_quadratic(prior, reward, ALPHA / lam)
            g = torch.Generator().manual_seed(int(100 * lam))
            floors = _floors(target, g)
            floor = float(np.mean(floors))
            row = {"floor": {"emd": floor, "emd_stderr": float(np.std(floors, ddof=1) / math.sqrt(len(floors)))}}
            row["realigned"] = _summary(_emds(_chain(RealignedAdapter(reference, aligned, lam), g), target, g), floor)
            row["from_scratch"] = _summary(_emds(_chain(ToyAdapter(target, num_steps=STEPS), g), target, g), floor)
            realigned = RealignedAdapter(reference, aligned, lam)
            runs = [  # (key, base adapter, reward, kl_coeff of the DAS stage)
                ("das_half", RealignedAdapter(reference, aligned, lam / 2), reward, 2 * ALPHA / lam),
                (
                    "das_from_aligned",
                    aligned,
                    reward if lam > 1 else negated,
                    ALPHA / abs(lam - 1) if lam != 1 else None,
                ),
                ("das_double_tilt", realigned, reward, ALPHA / lam),
            ]
            for key, base, stage_reward, kl_coeff in runs:
                if kl_coeff is None:
                    continue  # no residual at λ = 1: that is the aligned model itself
                draws, final_ess = _das(base, stage_reward, kl_coeff, g)
                row[key] = {**_summary(_emds(draws, target, g), floor), "final_ess": final_ess}
            for key, gradient in (("das_realigned_proposal", False), ("das_realigned_proposal_gradient", True)):
                draws, final_ess = _das_with_proposal(reference, realigned, reward, ALPHA / lam, g, gradient)
                row[key] = {**_summary(_emds(draws, target, g), floor), "final_ess": final_ess}
            draws, final_ess = smc_with_realigned_proposal(reference, realigned, reward, ALPHA / lam, g)
            row["smc_realigned_proposal"] = {**_summary(_emds(draws, target, g), floor), "final_ess": final_ess}
            rows[str(lam)] = row
            summary = "  ".join(
                f"{key} {value['emd_over_floor']:.2f}±{value['emd_over_floor_stderr']:.2f}"
                for key, value in row.items()
                if key != "floor"
            )
            print(
                f"{name:<16s} λ={lam:<5} floor {floor:.3f}  {summary}  ({time.perf_counter() - start:.0f}s)",
                flush=True,
            )
        table[name] = rows
    return table


def _time_per_sample(adapters: dict, prompts: list[str], repeats: int) -> dict:
    """Median seconds per sample of ``sample_images`` for each adapter, interleaved."""
    times: dict[str, list[float]] = {key: [] for key in adapters}
    for repeat in range(repeats + 1):
        for key, adapter in adapters.items():
            start = time.perf_counter()
            sample_images(adapter, prompts, torch.Generator().manual_seed(repeat), batch_size=len(prompts))
            if repeat:  # the first round warms up
                times[key].append((time.perf_counter() - start) / len(prompts))
    out = {f"{key}_seconds_per_sample": statistics.median(values) for key, values in times.items()}
    out["ratio_realigned_over_reference"] = out["realigned_seconds_per_sample"] / out["reference_seconds_per_sample"]
    return out


def timing() -> dict:
    from world.model import load_adapter

    prior = nine_gaussians()
    reference = ToyAdapter(prior, num_steps=STEPS)
    aligned = ToyAdapter(tilt_quadratic(prior, paper_toy_reward(), ALPHA)[0], num_steps=STEPS)
    toy = _time_per_sample(
        {"reference": reference, "realigned": RealignedAdapter(reference, aligned, 0.5)}, [""] * 4000, repeats=5
    )
    toy.update(samples=4000, steps=STEPS)
    print(f"toy: realigned/reference time per sample {toy['ratio_realigned_over_reference']:.2f}", flush=True)
    reference, aligned = load_adapter(), load_adapter()  # the world model twice: the cost, not the alignment
    prompts = ["a red circle on a white background", "a blue square on a black background"] * 4
    pixel = _time_per_sample(
        {"reference": reference, "realigned": RealignedAdapter(reference, aligned, 0.5)}, prompts, repeats=3
    )
    pixel.update(samples=len(prompts), steps=reference.num_steps, guidance_scale=reference.guidance_scale)
    print(
        f"pixel world: realigned/reference time per sample {pixel['ratio_realigned_over_reference']:.2f} "
        f"({1000 * pixel['reference_seconds_per_sample']:.0f} ms "
        f"vs {1000 * pixel['realigned_seconds_per_sample']:.0f} ms)",
        flush=True,
    )
    return {"toy_nine_gaussians": toy, "pixel_world_shapes32": pixel}


def main() -> None:
    torch.set_num_threads(1)
    start = time.perf_counter()
    payload = {
        "setup": {
            "alpha_aligned": ALPHA,
            "lambdas": list(LAMBDAS),
            "steps": STEPS,
            "eta": 1.0,
            "set_size": SET,
            "sets": SETS,
            "smc_runs": SET * SETS,
            "smc_particles": PARTICLES,
            "reward": "paper toy -x^2/100 - y^2",
            "target": "p_ref * exp(lam * r / alpha)",
            "bar": "das_realigned_proposal emd_over_floor <= 1.2 (issue 15)",
        },
        "toy_emd_over_floor": toy_table(),
        "time_per_sample": timing(),
    }
    payload["wall_seconds"] = time.perf_counter() - start
    path = write_result("realign", payload)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
