"""The analytic toys: exact scores, exact tilted targets, and the EMD."""

import numpy as np
import torch
from scipy.stats import wasserstein_distance_nd

from das.toy import (
    GaussianMixture,
    QuadraticReward,
    eight_gaussians,
    emd,
    nine_gaussians,
    paper_toy_reward,
    sample_tilted_on_grid,
    tilt_quadratic,
)


def test_noise_prediction_is_the_exact_score():
    prior = nine_gaussians()
    x = torch.randn(7, 2, dtype=torch.float64, requires_grad=True)
    for abar in (0.999, 0.5, 0.01):
        (score,) = torch.autograd.grad(prior.log_prob(x, abar).sum(), x)
        assert torch.allclose(prior.noise_prediction(x, abar), -((1 - abar) ** 0.5) * score, atol=1e-10)


def test_closed_form_tilt_agrees_with_the_grid_tilt():
    prior, reward = nine_gaussians(), paper_toy_reward()
    target, log_z = tilt_quadratic(prior, reward, 1.0)
    generator = torch.Generator().manual_seed(0)
    n = 40000
    on_grid = sample_tilted_on_grid(prior, reward, 1.0, n, generator)
    exact = target.sample(n, generator)
    # moments and the mass in each column of the grid agree within Monte-Carlo error
    assert torch.allclose(on_grid.mean(0), exact.mean(0), atol=0.06)
    assert torch.allclose(on_grid.var(0), exact.var(0), rtol=0.03)
    for lo, hi in ((-9, -2), (-2, 2), (2, 9)):
        shares = [float(((s[:, 0] > lo) & (s[:, 0] < hi)).double().mean()) for s in (on_grid, exact)]
        assert abs(shares[0] - shares[1]) < 0.015
    # log-normalizer against a Monte-Carlo estimate from the prior
    x = prior.sample(400000, generator)
    assert abs(float(torch.logsumexp(reward(x), 0) - np.log(400000)) - log_z) < 0.02


def test_tilt_of_a_single_gaussian_is_textbook():
    prior = GaussianMixture(
        torch.tensor([[1.0, -2.0]], dtype=torch.float64),
        torch.tensor([[0.5, 2.0]], dtype=torch.float64),
        torch.zeros(1, dtype=torch.float64),
    )
    target, _ = tilt_quadratic(prior, QuadraticReward([4.0, 0.0], [3.0, 0.0]), alpha=2.0)
    # dimension 0: precision 1/0.5 + 4/2 = 4 → var 0.25, mean 0.25 (2·1 + 2·3) = 2.0; dimension 1 untouched
    assert torch.allclose(target.variances, torch.tensor([[0.25, 2.0]], dtype=torch.float64))
    assert torch.allclose(target.means, torch.tensor([[2.0, -2.0]], dtype=torch.float64))


def test_eight_gaussians_lie_on_the_circle():
    prior = eight_gaussians(radius=4.0)
    assert torch.allclose(prior.means.norm(dim=-1), torch.full((8,), 4.0, dtype=torch.float64))


def test_emd_equals_scipy_wasserstein_distance_nd():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(40, 2)), rng.normal(size=(40, 2)) + 0.5
    assert abs(emd(a, b) - wasserstein_distance_nd(a, b)) < 1e-7
