"""The SMC core against exact answers, plus its contracts (chunking, selection, errors)."""

import math

import numpy as np
import pytest
import torch

from das.proposals import GradientOptions
from das.resampling import effective_sample_size
from das.rewards import FunctionReward
from das.smc import DASSampler, DASSettings, Evaluation, SMCTrace
from das.toy import GaussianMixture, QuadraticReward, emd, nine_gaussians, paper_toy_reward, tilt_quadratic
from das.toy.adapter import ToyAdapter
from tests.das.das_reference import settings_of


def _gaussian_adapter(num_steps=40, mean=1.0, var=0.5):
    prior = GaussianMixture(
        torch.tensor([[mean]], dtype=torch.float64),
        torch.tensor([[var]], dtype=torch.float64),
        torch.zeros(1, dtype=torch.float64),
    )
    return ToyAdapter(prior, num_steps=num_steps, eta=1.0, dtype=torch.float64)


def _chain_marginal(adapter):
    """Exact law of the chain's output: the transitions are affine-Gaussian for a Gaussian prior."""
    m, v = 0.0, 1.0
    probe = torch.tensor([[0.0], [1.0]], dtype=torch.float64)
    for step in range(adapter.num_steps):
        t = adapter.transition(probe, step, {})
        slope, offset = float(t.mean[1] - t.mean[0]), float(t.mean[0])
        m, v = slope * m + offset, slope**2 * v + float(t.std) ** 2
    return m, v


def _tilted_gaussian(m, v, precision, center, alpha):
    """Mean, variance and log E[exp(r/α)] of N(m, v) tilted by r = −½ p (x − c)²."""
    q = precision / alpha
    return (
        (m + q * v * center) / (1 + q * v),
        v / (1 + q * v),
        -0.5 * math.log(1 + q * v) - q * (m - center) ** 2 / (2 * (1 + q * v)),
    )


@pytest.mark.parametrize(
    "options",
    [
        dict(tempering="exponential", tempering_gamma=0.05),
        dict(tempering="adaptive", ess_threshold=0.5),
        dict(tempering="none", ess_threshold=1.0, resampling="systematic"),  # resamples every step
        dict(tempering="exponential", tempering_gamma=0.05, gradient="none"),  # gradient-free mode
    ],
    ids=["exponential", "adaptive", "always-resample", "gradient-free"],
)
def test_gaussian_prior_quadratic_reward_matches_closed_form(options):
    adapter = _gaussian_adapter()
    precision, center, alpha = 2.0, 2.5, 0.8
    reward = QuadraticReward([precision], [center])
    m, v = _chain_marginal(adapter)
    target_mean, target_var, target_log_z = _tilted_gaussian(m, v, precision, center, alpha)

    sampler = DASSampler(adapter, settings_of(dict(kl_coeff=alpha, num_particles=1500, selection="all", **options)))
    result = sampler.sample(["a", "b", "c", "d"], reward, torch.Generator().manual_seed(0))
    w, x = result.weights.double(), result.samples[..., 0]
    mean = (w * x).sum(-1)
    var = (w * (x - mean.unsqueeze(-1)) ** 2).sum(-1)
    ess = float(result.ess[-1].min())
    assert ess > 100
    # Monte-Carlo error of a weighted mean over 4 prompts, with a generous margin for the
    # correlation that resampling introduces.
    mean_tol = 5 * math.sqrt(target_var / ess / 4) * 3
    assert abs(float(mean.mean()) - target_mean) < mean_tol
    assert abs(float(var.mean()) / target_var - 1) < 0.1
    assert abs(float(result.log_normalizer.double().mean()) - target_log_z) < 0.05
    assert torch.allclose(result.weights.sum(-1), torch.ones(4, dtype=result.weights.dtype), atol=1e-5)


def nine_gaussians_emd(**options) -> tuple[float, float]:
    """DAS with 100 particles and 100 steps on the nine-Gaussian toy: (EMD to the exact target, floor).

    Each of 500 independent SMC runs (batched as 500 "prompts") returns one particle drawn by
    weight, giving 500 samples; the floor is the EMD between two independent 500-sample
    draws of the exact target. Both are averaged over several target draws to tame the
    noise of a 500-point EMD. `options` are the sampler's, named as ``config.smc``'s fields.
    """
    prior, reward, alpha = nine_gaussians(), paper_toy_reward(), 1.0
    target, _ = tilt_quadratic(prior, reward, alpha)
    adapter = ToyAdapter(prior, num_steps=100, eta=1.0)
    sampler = DASSampler(adapter, settings_of(dict(kl_coeff=alpha, num_particles=100, selection="sample", **options)))
    generator = torch.Generator().manual_seed(0)
    samples = sampler.sample([""] * 500, reward, generator).selected
    das = np.mean([emd(samples, target.sample(500, generator)) for _ in range(4)])
    floor = np.mean([emd(target.sample(500, generator), target.sample(500, generator)) for _ in range(4)])
    return float(das), float(floor)


def test_nine_gaussians_emd_matches_the_paper_and_the_floor():
    """EMD to the exact target ≤ 0.82 (the paper's figure) and ≤ 1.5× the floor."""
    das, floor = nine_gaussians_emd()
    assert das <= 0.82
    assert das <= 1.5 * floor, (das, floor)


def test_chunking_does_not_change_the_result():
    adapter = ToyAdapter(nine_gaussians(), num_steps=8)
    reward = paper_toy_reward()
    results = [
        DASSampler(adapter, DASSettings(kl_coeff=1.0, num_particles=5, max_chunk_rows=chunk)).sample(
            ["x", "y", "z"], reward, torch.Generator().manual_seed(4)
        )
        for chunk in (None, 4)
    ]
    assert torch.allclose(results[0].samples, results[1].samples, atol=1e-5)
    assert torch.allclose(results[0].log_weights, results[1].log_weights, atol=1e-4)


def test_result_shapes_traces_and_selections():
    adapter = ToyAdapter(nine_gaussians(), num_steps=6)
    reward = paper_toy_reward()
    b, k, t = 3, 5, 6
    for selection in ("max_weight", "sample", "all"):
        result = DASSampler(adapter, DASSettings(kl_coeff=1.0, num_particles=k, selection=selection)).sample(
            ["p"] * b, reward, torch.Generator().manual_seed(0)
        )
        assert result.samples.shape == (b, k, 2) and result.images.shape == (b, k, 2)
        assert result.rewards.shape == result.log_weights.shape == (b, k)
        assert result.ess.shape == (t + 1, b) and result.lam.shape == (t + 1, b)
        assert result.resampled.shape == (t, b) and result.trace.reward.shape == (t + 1, b)
        assert torch.all(result.lam[-1] == 1.0)
        assert torch.allclose(result.rewards, reward(result.samples.reshape(-1, 2)).view(b, k))
        if selection == "all":
            assert result.selected.shape == (b, k, 2)
        else:
            assert result.selected.shape == (b, 2)
            assert torch.equal(result.selected, result.images[torch.arange(b), result.selected_index])
        if selection == "max_weight":
            assert torch.equal(result.selected_index, result.log_weights.argmax(-1))


def test_gradient_free_mode_never_asks_for_gradients():
    calls = []

    def score(x):
        calls.append(torch.is_grad_enabled() and x.requires_grad)
        return -(x**2).sum(-1)

    reward = FunctionReward(score, differentiable=False)
    adapter = ToyAdapter(nine_gaussians(), num_steps=5)
    DASSampler(adapter, DASSettings(kl_coeff=1.0, num_particles=3)).sample(
        ["a", "b"], reward, torch.Generator().manual_seed(0)
    )
    assert calls and not any(calls)


def test_non_finite_rewards_fall_back_to_uniform_weights():
    reward = FunctionReward(lambda x: torch.full((x.shape[0],), float("nan")), differentiable=False)
    adapter = ToyAdapter(nine_gaussians(), num_steps=4)
    result = DASSampler(adapter, DASSettings(kl_coeff=1.0, num_particles=3)).sample(
        ["a", "b"], reward, torch.Generator().manual_seed(0)
    )
    assert torch.all(result.degenerate_steps > 0)
    assert torch.allclose(result.weights, torch.full((2, 3), 1 / 3))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(kl_coeff=0.0), "kl_coeff"),
        (dict(num_particles=0), "num_particles"),
        (dict(ess_threshold=1.5), "ess_threshold"),
        (dict(resampling="nope"), "ssp"),
        (dict(tempering="nope"), "exponential"),
        (dict(selection="best"), "max_weight"),
        (dict(max_chunk_rows=0), "max_chunk_rows"),
    ],
)
def test_bad_settings_fail_with_a_clear_message(kwargs, message):
    options = dict(kl_coeff=1.0)
    options.update(kwargs)
    with pytest.raises(ValueError, match=message):
        DASSettings(**options)


def test_the_sampler_takes_settings_and_no_keywords():
    adapter = ToyAdapter(nine_gaussians(), num_steps=2)
    with pytest.raises(ValueError, match="DASSampler takes a DASSettings"):
        DASSampler(adapter, paper_toy_reward())
    with pytest.raises(TypeError):
        DASSampler(adapter, paper_toy_reward(), kl_coeff=1.0)


def test_a_gradient_needs_a_differentiable_reward_and_auto_takes_none():
    reward = FunctionReward(lambda x: x.sum(-1), differentiable=False)
    adapter = ToyAdapter(nine_gaussians(), num_steps=2)
    sampler = DASSampler(adapter, DASSettings(kl_coeff=1.0, gradient=GradientOptions("full")))
    with pytest.raises(ValueError, match="needs a differentiable reward"):
        sampler.sample(["a"], reward, torch.Generator().manual_seed(0))
    auto = DASSampler(adapter, DASSettings(kl_coeff=1.0))
    assert auto.proposal_gradient(reward).kind == "none" and auto.proposal_gradient(paper_toy_reward()).kind == "full"


# ---------------------------------------------------------------- a separate base proposal


def _other_gaussian_adapter(mean, var, eta=1.0, num_steps=40):
    prior = GaussianMixture(
        torch.tensor([[mean]], dtype=torch.float64),
        torch.tensor([[var]], dtype=torch.float64),
        torch.zeros(1, dtype=torch.float64),
    )
    return ToyAdapter(prior, num_steps=num_steps, eta=eta, dtype=torch.float64)


def test_proposal_adapter_equal_to_the_adapter_reproduces_the_default_bit_for_bit():
    from das.adapters.realigned import RealignedAdapter

    adapter = ToyAdapter(nine_gaussians(), num_steps=12)
    other = ToyAdapter(tilt_quadratic(nine_gaussians(), paper_toy_reward(), 1.0)[0], num_steps=12)
    for gradient in ("full", "none"):
        settings = DASSettings(kl_coeff=0.7, num_particles=6, gradient=GradientOptions(gradient), ess_threshold=0.8)
        expected = DASSampler(adapter, settings).sample(
            ["a", "b"], paper_toy_reward(), torch.Generator().manual_seed(3)
        )
        # the adapter itself, and a distinct adapter with the same transitions (λ = 0 runs the reference only)
        for proposal in (adapter, RealignedAdapter(adapter, other, 0.0)):
            result = DASSampler(adapter, settings, proposal_adapter=proposal).sample(
                ["a", "b"], paper_toy_reward(), torch.Generator().manual_seed(3)
            )
            for field in ("samples", "log_weights", "log_normalizer", "ess", "resampled", "selected"):
                assert torch.equal(getattr(result, field), getattr(expected, field)), (gradient, field)
            assert torch.equal(result.trace.reward, expected.trace.reward)


@pytest.mark.parametrize("case", ["realigned-towards-a-shifted-gaussian", "wider-proposal-of-another-gaussian"])
def test_a_wrong_proposal_adapter_still_gives_the_closed_form(case):
    """The target stays the adapter's chain tilted by exp(r/α); the weights correct the proposal exactly.

    Uncorrected, the realigned proposal (λ = 0.5 towards N(0, 0.5), with N(1, 0.5) as the
    reference) would give log Z ≈ −2.6 instead of −1.76. The second case draws from a chain
    with other means and larger stds (η = 1 against the adapter's η = 0.6), which exercises
    the ``Σ log(σ'/σ)`` term.
    """
    from das.adapters.realigned import RealignedAdapter

    if case == "realigned-towards-a-shifted-gaussian":
        adapter = _gaussian_adapter()
        proposal = RealignedAdapter(adapter, _other_gaussian_adapter(0.0, 0.5), 0.5)
    else:
        adapter = _other_gaussian_adapter(1.0, 0.5, eta=0.6)
        proposal = _other_gaussian_adapter(0.5, 0.5, eta=1.0)
    precision, center, alpha = 2.0, 2.5, 0.8
    m, v = _chain_marginal(adapter)
    target_mean, target_var, target_log_z = _tilted_gaussian(m, v, precision, center, alpha)
    settings = settings_of(dict(kl_coeff=alpha, num_particles=1500, selection="all", tempering_gamma=0.05))
    sampler = DASSampler(adapter, settings, proposal_adapter=proposal)
    result = sampler.sample(
        ["a", "b", "c", "d"], QuadraticReward([precision], [center]), torch.Generator().manual_seed(0)
    )
    w, x = result.weights.double(), result.samples[..., 0]
    mean = (w * x).sum(-1)
    var = (w * (x - mean.unsqueeze(-1)) ** 2).sum(-1)
    assert abs(float(mean.mean()) - target_mean) < 5 * math.sqrt(target_var / 1500 / 4) * 3
    assert abs(float(var.mean()) / target_var - 1) < 0.1
    assert abs(float(result.log_normalizer.double().mean()) - target_log_z) < 0.05


def test_proposal_adapter_must_run_the_same_chain():
    adapter = ToyAdapter(nine_gaussians(), num_steps=10)
    one_d = GaussianMixture(torch.zeros(1, 1), torch.ones(1, 1), torch.zeros(1))
    for proposal in (ToyAdapter(nine_gaussians(), num_steps=12), ToyAdapter(one_d, num_steps=10)):
        with pytest.raises(ValueError, match="proposal_adapter must run the adapter's chain"):
            DASSampler(adapter, DASSettings(kl_coeff=1.0), proposal_adapter=proposal)


# ---------------------------------------------------------------- state, stages and trace


def test_the_schedule_is_asked_for_lambda_0_to_n_minus_1_and_the_trace_records_each():
    """``λ_0`` twists ``x_T``, ``λ_{i+1}`` is asked for before transition ``i``; the last ``λ_n`` is 1."""
    asked = []

    def schedule(info):
        asked.append((info.index, info.num_steps, info.lam.clone(), info.log_weights.shape))
        return torch.full_like(info.lam, 0.1 * (info.index + 1))

    adapter = ToyAdapter(nine_gaussians(), num_steps=5)
    result = DASSampler(adapter, DASSettings(kl_coeff=1.0, num_particles=3, tempering=schedule)).sample(
        ["a", "b"], paper_toy_reward(), torch.Generator().manual_seed(0)
    )
    assert [index for index, *_ in asked] == [0, 1, 2, 3, 4]
    assert all(num_steps == 5 and shape == (2, 3) for _, num_steps, _, shape in asked)
    assert torch.all(asked[0][2] == 0)  # no twist before λ_0
    expected = torch.tensor([0.1, 0.2, 0.3, 0.4, 0.5, 1.0]).unsqueeze(-1).expand(6, 2)
    assert torch.allclose(result.lam, expected)
    for index, _, lam, _ in asked[1:]:
        assert torch.allclose(lam, torch.full((2,), 0.1 * index))  # the current λ_{j-1}


def test_result_splits_samples_and_trace():
    adapter = ToyAdapter(nine_gaussians(), num_steps=4)
    settings = DASSettings(kl_coeff=1.0, num_particles=3, ess_threshold=0.9, tempering="none")
    result = DASSampler(adapter, settings).sample(["a", "b"], paper_toy_reward(), torch.Generator().manual_seed(0))
    trace = result.trace
    assert isinstance(trace, SMCTrace)
    assert result.ess is trace.ess and result.lam is trace.lam and result.resampled is trace.resampled
    assert result.degenerate_steps is trace.degenerate_steps
    assert not hasattr(result, "reward_trace")  # the old name is gone: result.trace.reward
    assert trace.resampled.any()  # ESS threshold 0.9 makes some prompt resample
    final_ess = effective_sample_size(result.log_weights)
    assert torch.allclose(trace.ess[-1], final_ess)
    assert torch.allclose(trace.reward[-1], (result.weights * result.rewards).sum(-1))


def test_evaluation_takes_rows_and_joins_chunks():
    reward, mean, grad = torch.arange(4.0), torch.randn(4, 2), torch.randn(4, 2)
    rows = torch.tensor([3, 3, 0, 1])
    taken = Evaluation(reward, mean=mean, std=torch.tensor(0.5), grad=grad).take(rows)
    assert torch.equal(taken.reward, reward[rows]) and torch.equal(taken.mean, mean[rows])
    assert torch.equal(taken.grad, grad[rows]) and taken.std.dim() == 0 and taken.proposal_mean is None
    chunks = [{"reward": reward[:3], "std": torch.tensor(0.5)}, {"reward": reward[3:], "std": torch.tensor(0.5)}]
    joined = Evaluation.concat(chunks)
    assert torch.equal(joined.reward, reward) and joined.std.dim() == 0 and joined.mean is None
    per_row = Evaluation.concat([{"reward": reward[:2], "std": mean[:2]}, {"reward": reward[2:], "std": mean[2:]}])
    assert torch.equal(per_row.std, mean)
