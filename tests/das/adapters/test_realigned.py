"""DeRaDiff's realigned adapter: identities, the mixed step, mismatch errors, and exact toy checks."""

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler

from das.adapters.lcm import LCMAdapter
from das.adapters.realigned import RealignedAdapter
from das.adapters.stable_diffusion import StableDiffusionAdapter, StableDiffusionXLAdapter
from das.ancestral import sample_images
from das.proposals import GradientOptions
from das.rewards import FunctionReward
from das.smc import DASSampler, DASSettings
from das.toy import GaussianMixture, eight_gaussians, emd, nine_gaussians, paper_toy_reward, tilt_quadratic
from das.toy.adapter import ToyAdapter
from tests.das.adapters.adapter_builders import pixel_adapter
from tests.tiny_components import (
    ddim_scheduler,
    tiny_lcm_pipeline,
    tiny_sd_pipeline,
    tiny_sdxl_pipeline,
)

PROMPTS = ["a cat", "a red dog"]


def _toys(num_steps=20, alpha=1.0, prior=None, **kwargs):
    prior = prior or nine_gaussians()
    aligned, _ = tilt_quadratic(prior, paper_toy_reward(), alpha)
    return ToyAdapter(prior, num_steps=num_steps, **kwargs), ToyAdapter(aligned, num_steps=num_steps, **kwargs)


@pytest.fixture(scope="module")
def pixels():
    return pixel_adapter(0), pixel_adapter(1, guidance=3.0)


def _chain(adapter, n, seed):
    return sample_images(adapter, [""] * n, torch.Generator().manual_seed(seed), batch_size=n)


# ---------------------------------------------------------------- identities


@pytest.mark.parametrize("lam", [0.0, 1.0])
def test_lambda_zero_and_one_reproduce_the_chains_bit_for_bit_on_the_toy(lam):
    reference, aligned = _toys()
    expected = _chain(reference if lam == 0 else aligned, 64, 3)
    assert torch.equal(_chain(RealignedAdapter(reference, aligned, lam), 64, 3), expected)
    # ... and inside DAS, with gradients through the mixed transition
    results = [
        DASSampler(a, DASSettings(kl_coeff=2.0, num_particles=4)).sample(
            ["p", "q"], paper_toy_reward(), torch.Generator().manual_seed(1)
        )
        for a in (reference if lam == 0 else aligned, RealignedAdapter(reference, aligned, lam))
    ]
    assert torch.equal(results[0].samples, results[1].samples)
    assert torch.equal(results[0].log_weights, results[1].log_weights)


@pytest.mark.parametrize("lam", [0.0, 1.0])
def test_lambda_zero_and_one_reproduce_the_pixel_chains_bit_for_bit(pixels, lam):
    reference, aligned = pixels
    realigned = RealignedAdapter(reference, aligned, lam)
    expected = sample_images(reference if lam == 0 else aligned, PROMPTS, torch.Generator().manual_seed(2))
    assert torch.equal(sample_images(realigned, PROMPTS, torch.Generator().manual_seed(2)), expected)


LATENT = {
    "sd": lambda seed: StableDiffusionAdapter(tiny_sd_pipeline(seed), num_steps=3, guidance_scale=5.0),
    "sdxl": lambda seed: StableDiffusionXLAdapter(tiny_sdxl_pipeline(seed), num_steps=2, guidance_scale=5.0),
    "lcm": lambda seed: LCMAdapter(tiny_lcm_pipeline(seed), num_steps=2),
}


@pytest.mark.parametrize("family", list(LATENT))
def test_latent_pipelines_realign(family):
    """SD, SDXL and LCM: λ ∈ {0, 1} reproduce each chain bit for bit; a mixed λ runs inside DAS."""
    reference, aligned = LATENT[family](0), LATENT[family](1)
    for lam, expected in ((0.0, reference), (1.0, aligned)):
        images = sample_images(RealignedAdapter(reference, aligned, lam), PROMPTS, torch.Generator().manual_seed(0))
        assert torch.equal(images, sample_images(expected, PROMPTS, torch.Generator().manual_seed(0)))
    reward = FunctionReward(lambda images: images.mean(dim=(1, 2, 3)), differentiable=True)
    result = DASSampler(RealignedAdapter(reference, aligned, 1.5), DASSettings(kl_coeff=0.1, num_particles=2)).sample(
        PROMPTS, reward, torch.Generator().manual_seed(0)
    )
    assert torch.isfinite(result.rewards).all()


def test_mixed_transition_is_the_scheduler_step_on_the_mixed_noise(pixels):
    reference, aligned = pixels
    lam, step = 0.7, 1
    realigned = RealignedAdapter(reference, aligned, lam)
    cond = realigned.encode_prompts(PROMPTS)
    assert set(cond) == {
        "reference.prompt_embeds",
        "reference.negative_prompt_embeds",
        "aligned.prompt_embeds",
        "aligned.negative_prompt_embeds",
    }
    assert all(v.shape[0] == len(PROMPTS) for v in cond.values())
    g = torch.Generator().manual_seed(0)
    x = realigned.initial_noise(2, g)
    with torch.no_grad():
        eps_ref = reference.model_output(x, step, reference.encode_prompts(PROMPTS))
        eps_aligned = aligned.model_output(x, step, aligned.encode_prompts(PROMPTS))
        transition = realigned.transition(x, step, cond)
    eps = (1 - lam) * eps_ref + lam * eps_aligned
    scheduler = ddim_scheduler()
    scheduler.set_timesteps(3)
    noise = torch.randn(x.shape, generator=g)
    expected = scheduler.step(eps, scheduler.timesteps[step], x, eta=1.0, variance_noise=noise)
    assert torch.allclose(transition.mean + transition.std * noise, expected.prev_sample, atol=1e-5)
    assert torch.allclose(transition.x0_hat, expected.pred_original_sample, atol=1e-5)


def test_toy_mixed_transition_is_the_scheduler_step_on_the_mixed_noise_and_keeps_the_graph():
    reference, aligned = _toys(num_steps=10)
    lam, step = 2.0, 4
    x = torch.randn(5, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    transition = RealignedAdapter(reference, aligned, lam).transition(x, step, {})
    timestep = reference.timesteps[step]
    abar = float(reference.scheduler.alphas_cumprod[timestep])
    eps = (1 - lam) * reference.prior.noise_prediction(x, abar) + lam * aligned.prior.noise_prediction(x, abar)
    noise = torch.randn(5, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    expected = reference.scheduler.step(eps, timestep, x, eta=1.0, variance_noise=noise)
    assert torch.allclose(transition.mean + transition.std * noise, expected.prev_sample, atol=1e-12)
    (grad,) = torch.autograd.grad(transition.x0_hat.sum(), x)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0


# ---------------------------------------------------------------- mismatches


def _other_betas():
    return DDIMScheduler(
        num_train_timesteps=1000, beta_schedule="scaled_linear", clip_sample=False, set_alpha_to_one=True
    )


@pytest.mark.parametrize(
    "make_aligned, what",
    [
        (lambda: ToyAdapter(nine_gaussians(), num_steps=12), "number of steps"),
        (lambda: ToyAdapter(nine_gaussians(), num_steps=20, eta=0.0), "eta"),
        (lambda: ToyAdapter(nine_gaussians(), num_steps=20, scheduler=_other_betas()), "alphas_cumprod"),
        (
            lambda: ToyAdapter(GaussianMixture(torch.zeros(1, 3), torch.ones(1, 3), torch.zeros(1)), num_steps=20),
            "latent shape",
        ),
        (lambda: ToyAdapter(nine_gaussians(), num_steps=20, dtype=torch.float64), "dtype"),
    ],
    ids=["steps", "eta", "schedule", "shape", "dtype"],
)
def test_mismatched_toys_fail_with_one_clear_error(make_aligned, what):
    reference = ToyAdapter(nine_gaussians(), num_steps=20)
    with pytest.raises(ValueError, match=f"cannot be realigned: they differ in .*{what}"):
        RealignedAdapter(reference, make_aligned(), 0.5)


def test_mismatched_pixel_models_fail_with_one_clear_error(pixels):
    reference, _ = pixels
    v_pred = DDIMScheduler.from_config(ddim_scheduler().config, prediction_type="v_prediction")
    with pytest.raises(ValueError, match="prediction type .*'epsilon'.*'v_prediction'"):
        RealignedAdapter(reference, pixel_adapter(1, scheduler=v_pred), 0.5)
    with pytest.raises(ValueError, match="latent shape"):
        RealignedAdapter(reference, ToyAdapter(nine_gaussians(), num_steps=3), 0.5)
    with pytest.raises(TypeError, match="no model_output"):
        RealignedAdapter(reference, object(), 0.5)
    with pytest.raises(ValueError, match="lam"):
        RealignedAdapter(reference, reference, -0.1)


# ---------------------------------------------------------------- exact toy checks

SET = 500  # samples per EMD set


def _emd_ratio(samples, target, generator):
    """Mean EMD of `SET`-sized slices of `samples` to fresh exact target draws, over the floor.

    The floor is the mean EMD between two independent exact draws of the same size, over as
    many pairs. Averaging over several sets tames the EMD's noise, which on these
    well-separated modes is dominated by how many points land in each mode.
    """
    sets = samples.reshape(-1, SET, samples.shape[-1])
    value = np.mean([emd(s, target.sample(SET, generator)) for s in sets])
    floor = np.mean([emd(target.sample(SET, generator), target.sample(SET, generator)) for _ in sets])
    return value / floor


@pytest.mark.parametrize("prior", [nine_gaussians(), eight_gaussians()], ids=["nine", "eight"])
def test_realigned_toy_emulates_alpha_over_lambda(prior):
    """λ = 1 is the exactly aligned model; λ = 2 extrapolates to α/2 (EMD ≤ 1.5× the floor, 8 sets of 500).

    λ = 2 is asserted on the nine Gaussians only: there the realigned chain measured
    0.86–1.03× the floor over seeds, while on the eight Gaussians it measured 1.0–1.9×
    (benchmarks/results/realign.json), the DeRaDiff approximation showing through the noise.
    """
    reward, alpha = paper_toy_reward(), 1.0
    reference, aligned = _toys(num_steps=100, alpha=alpha, prior=prior)
    generator = torch.Generator().manual_seed(0)
    for lam in (1.0, 2.0) if prior.means.shape[0] == 9 else (1.0,):
        target, _ = tilt_quadratic(prior, reward, alpha / lam)
        ratio = _emd_ratio(_chain(RealignedAdapter(reference, aligned, lam), 8 * SET, 1), target, generator)
        assert ratio <= 1.5, (lam, ratio)


def _draws_by_weight(result, generator):
    """`SET` draws by weight from each prompt's particles, `(B·SET, d)`."""
    index = torch.multinomial(result.weights.double(), SET, replacement=True, generator=generator)
    return torch.gather(result.samples, 1, index.unsqueeze(-1).expand(-1, -1, result.samples.shape[-1])).flatten(0, 1)


def test_das_on_the_realigned_model_targets_the_right_strength():
    """DAS over the realigned chain at λ_b, with the reward at the residual strength α/(λ − λ_b), targets α/λ.

    The realigned base already carries ``exp(λ_b r/α)``, so DAS adds only the rest; here
    λ = 2. At λ_b = 1 the base is the aligned model, on the toy the exact tilt, and the SMC
    log-normalizer estimates ``log Z(α/λ) − log Z(α)`` (up to the 100-step chain's own
    discretization); at λ_b = 1.5 the base is a genuine mix. The reward at the full α/λ on
    top of the realigned model at λ tilts twice (strength α/(2λ)) and lands far off.
    Measured EMD/floor over seeds: 0.9–1.55 for the right compositions, 3–6 for the double tilt.
    """
    prior, reward, alpha, lam = nine_gaussians(), paper_toy_reward(), 1.0, 2.0
    reference, aligned = _toys(num_steps=100, alpha=alpha, prior=prior)
    target, log_z = tilt_quadratic(prior, reward, alpha / lam)
    _, log_z_aligned = tilt_quadratic(prior, reward, alpha)
    generator = torch.Generator().manual_seed(0)
    for lam_base, kl_coeff, bar in (
        (1.0, alpha / (lam - 1.0), 2.0),
        (1.5, alpha / (lam - 1.5), 2.0),
        (lam, alpha / lam, None),
    ):
        settings = DASSettings(kl_coeff=kl_coeff, num_particles=SET, selection="all")
        sampler = DASSampler(RealignedAdapter(reference, aligned, lam_base), settings)
        result = sampler.sample([""] * 8, reward, generator)
        ratio = _emd_ratio(_draws_by_weight(result, generator), target, generator)
        if bar is None:
            assert ratio > 2.5, ratio  # the double tilt
        else:
            assert ratio <= bar, (lam_base, ratio)
        if lam_base == 1.0:
            assert abs(float(result.log_normalizer.mean()) - (log_z - log_z_aligned)) < 0.05


@pytest.mark.parametrize("prior", [nine_gaussians(), eight_gaussians()], ids=["nine", "eight"])
def test_das_with_the_realigned_proposal_reaches_the_floor_at_alpha_over_lambda(prior):
    """The issue's bar: the reference chain tilted at α/λ as target, the realigned chain at λ as proposal.

    ``DASSampler(reference, DASSettings(kl_coeff=α/λ), proposal_adapter=RealignedAdapter(...))``
    targets ``p_ref · exp(λ r/α)`` exactly; the realigned chain only moves the particles.
    Protocol of the DAS paper, shrunk to a few seconds: 4000 independent runs of 8 particles
    (50 steps), one draw by weight each, mean EMD to exact draws over 8 sets of 500, over the
    floor (16 exact pairs). The realigned chain already carries the tilt, so no gradient
    shift and no tempering. At this size the 500-point EMD's own noise (mode counts) spreads
    the ratio over seeds: at λ = 0.5, seeds 0–5 measured 0.92–1.13 (nine) and 0.88–1.38
    (eight), hence the bar 1.5 here; the issue's 1.2 is met by the full-size benchmark
    (benchmarks/results/realign.json, ``das_realigned_proposal``, every λ on both toys),
    where the realigned chain alone measures 1.7–3.
    """
    reward, alpha, lam, steps = paper_toy_reward(), 1.0, 0.5, 50
    reference, aligned = _toys(num_steps=steps, alpha=alpha, prior=prior)
    target, _ = tilt_quadratic(prior, reward, alpha / lam)
    generator = torch.Generator().manual_seed(0)
    settings = DASSettings(
        kl_coeff=alpha / lam, num_particles=8, selection="sample", tempering="none", gradient=GradientOptions("none")
    )
    sampler = DASSampler(reference, settings, proposal_adapter=RealignedAdapter(reference, aligned, lam))
    samples = sampler.sample([""] * (8 * SET), reward, generator).selected
    value = np.mean([emd(s, target.sample(SET, generator)) for s in samples.reshape(-1, SET, 2)])
    floor = np.mean([emd(target.sample(SET, generator), target.sample(SET, generator)) for _ in range(16)])
    assert value <= 1.5 * floor, (value, floor)
