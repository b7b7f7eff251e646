"""Bootstrap heads against an explicit loop; GP posterior against the closed form."""

from __future__ import annotations

import pytest
import torch

from surrogate import UCB, BootstrapEnsembleSurrogate, GPSurrogate, MaxOverHeads, ThompsonSample, make_surrogate
from tests.surrogate.surrogate_helpers import SMALL_MLP, D, small_kwargs, toy_data


def _loop_over_heads(model: BootstrapEnsembleSurrogate, x: torch.Tensor) -> torch.Tensor:
    """Each head evaluated on its own with plain matrix products (no batching)."""
    outs = []
    for m in range(model.num_heads):
        h = model.x_norm.transform(x)
        layers = list(zip(model.net.weights, model.net.biases))
        for i, (w, b) in enumerate(layers):
            h = h @ w[m] + b[m, 0]
            if i < len(layers) - 1:
                h = torch.relu(h)
        outs.append(h[:, 0] * model.y_norm.std[0] + model.y_norm.mean[0])
    return torch.stack(outs)


def test_bootstrap_heads_differ_and_match_explicit_loop(fitted):
    model = fitted["bootstrap"]
    x, _ = toy_data(n=25, seed=7)
    with torch.no_grad():
        heads = _loop_over_heads(model, x)
        batched = model.head_predictions(x)
        mean, std = model.posterior(x)
    torch.testing.assert_close(batched, heads, rtol=1e-5, atol=1e-5)
    assert (heads[0] - heads[1]).abs().max() > 1e-3 and (heads[1] - heads[2]).abs().max() > 1e-3
    torch.testing.assert_close(mean, torch.stack([heads[m] for m in range(3)]).mean(0), rtol=1e-5, atol=1e-5)
    spread_var = sum((heads[m] - mean) ** 2 for m in range(3)) / (3 - 1)
    # the calibrated std: the head spread scaled, plus a constant part (both fitted on the validation split)
    explicit_std = torch.sqrt(model.spread_scale**2 * spread_var + model.floor_std**2)
    torch.testing.assert_close(std, explicit_std, rtol=1e-4, atol=1e-5)
    _, pred_std = model.posterior(x, observation_noise=True)
    torch.testing.assert_close(pred_std, (explicit_std**2 + model.noise_std**2).sqrt(), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(MaxOverHeads(model)(x), heads.max(0).values, rtol=1e-5, atol=1e-5)


def test_bootstrap_std_optimism_and_thompson(fitted):
    model = fitted["bootstrap"]
    x, _ = toy_data(n=10, seed=8)
    mean, std = model.posterior(x)
    torch.testing.assert_close(UCB(model, beta=1.5)(x), mean + 1.5 * std)
    score_a = ThompsonSample(model, torch.Generator().manual_seed(11))(x)
    score_b = ThompsonSample(model, torch.Generator().manual_seed(11))(x)
    assert torch.equal(score_a, score_b)
    assert any(torch.equal(score_a, head) for head in model.head_predictions(x))


def test_bootstrap_resamples_differ_per_head():
    """Heads sharing one initialization still differ: the bootstrap resamples differ."""
    x, y = toy_data(n=60)
    model = BootstrapEnsembleSurrogate(D, num_heads=2, **SMALL_MLP)
    model.fit(x, y, seed=0)
    preds = model.head_predictions(x)
    assert (preds[0] - preds[1]).abs().mean() > 1e-3


def _closed_form(model: GPSurrogate, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    gp = model.model
    z, t = gp.train_inputs[0], gp.train_targets
    ls = gp.covar_module.lengthscale.detach().reshape(-1)
    noise = gp.likelihood.noise.detach().reshape(-1)[0]
    c = gp.mean_module.constant.detach().reshape(-1)[0]

    def k(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        diff = (a[:, None, :] - b[None, :, :]) / ls
        return torch.exp(-0.5 * (diff**2).sum(-1))

    zq = model.project(q).detach()
    kxx = k(z, z) + noise * torch.eye(z.shape[0], dtype=torch.float64)
    ks = k(z, zq)
    solve = torch.linalg.solve(kxx, torch.cat([(t - c).unsqueeze(-1), ks], dim=1))
    mean = c + ks.T @ solve[:, 0]
    var = 1.0 - (ks * solve[:, 1:]).sum(0)
    return mean * model.y_norm.std[0] + model.y_norm.mean[0], var.sqrt() * model.y_norm.std[0]


def test_gp_kernel_is_the_one_assumed_by_the_closed_form(fitted):
    import gpytorch

    gp = fitted["gp"].model
    assert type(gp.covar_module) is gpytorch.kernels.RBFKernel
    assert type(gp.mean_module) is gpytorch.means.ConstantMean


def test_gp_posterior_matches_closed_form():
    x, y = toy_data(n=40)
    model = GPSurrogate(D, pca_dim=4, dtype="float64")
    model.fit(x.double(), y.double(), seed=0)
    assert model.pca_components.shape == (4, D)
    q, _ = toy_data(n=12, seed=5, dtype=torch.float64)
    mean, std = model.posterior(q)
    exp_mean, exp_std = _closed_form(model, q)
    exp_std = exp_std * model.variance_scale.sqrt()  # the epistemic variance is calibrated by leave-one-out
    torch.testing.assert_close(mean, exp_mean, rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(std, exp_std, rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(UCB(model, beta=2.0)(q), exp_mean + 2.0 * exp_std, rtol=1e-6, atol=1e-8)
    noise = model.model.likelihood.noise.detach().reshape(-1)[0] * model.y_norm.std[0] ** 2
    _, pred_std = model.posterior(q, observation_noise=True)
    torch.testing.assert_close(pred_std, (exp_std**2 + noise).sqrt(), rtol=1e-6, atol=1e-8)


def test_gp_gradients_through_pca_match_finite_differences():
    x, y = toy_data(n=30)
    model = GPSurrogate(D, pca_dim=3, dtype="float64")
    model.fit(x.double(), y.double(), seed=0)
    q = torch.randn(3, D, dtype=torch.float64, generator=torch.Generator().manual_seed(2), requires_grad=True)
    assert torch.autograd.gradcheck(lambda f: model.posterior(f), (q,), eps=1e-6, atol=1e-5)


def test_exact_gp_subsamples_beyond_max_points_with_a_warning():
    x, y = toy_data(n=50)
    model = GPSurrogate(D, pca_dim=None, max_points=20, method="exact")
    with pytest.warns(UserWarning, match="random subset of 20 of the 50"):
        info = model.fit(x, y, generator=torch.Generator().manual_seed(0))
    assert info["n_fit"] == 20 and info["subsampled"] and model.n_data == 50
    assert model.model.train_inputs[0].shape == (20, D)


def test_auto_gp_uses_every_point_beyond_max_points(recwarn):
    x, y = toy_data(n=50)
    model = GPSurrogate(D, pca_dim=None, max_points=20, inducing_points=16, epochs=2)
    info = model.fit(x, y, generator=torch.Generator().manual_seed(0))
    assert info["method"] == "sparse" and info["n_fit"] == 50 and not info["subsampled"] and model.n_data == 50
    assert not [w for w in recwarn if "random subset" in str(w.message)]
    assert GPSurrogate(D, pca_dim=None, max_points=50).fit(x, y, seed=0)["method"] == "exact"


def test_bootstrap_gradients_match_finite_differences():
    x, y = toy_data(n=40, dtype=torch.float64)
    model = make_surrogate("bootstrap", **small_kwargs("bootstrap", dtype="float64"))
    model.fit(x, y, seed=0)
    q = torch.randn(3, D, dtype=torch.float64, generator=torch.Generator().manual_seed(1), requires_grad=True)
    assert torch.autograd.gradcheck(lambda f: model.posterior(f), (q,), eps=1e-6, atol=1e-5)
