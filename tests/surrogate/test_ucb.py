"""The UCB surrogate's last-layer width against dense closed forms, its behaviour as data arrive, and the MLP fit."""

from __future__ import annotations

import pytest
import torch

from surrogate import UCB, MLPUCBSurrogate, UCBBonus
from surrogate.mlp import BatchedMLP, fit_batched_mlp
from tests.surrogate.surrogate_helpers import SMALL_MLP, D, toy_data


def _phi(n: int, h: int = 5, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, h, generator=g, dtype=torch.float64)


def test_design_bonus_equals_dense_inverse():
    data, query = _phi(50), _phi(7, seed=1)
    bonus = UCBBonus(lam=0.3, covariance="design", scale=1.3).fit(data)
    a_inv = torch.linalg.inv(0.3 * torch.eye(5, dtype=torch.float64) + data.T @ data)
    expected = 1.3 * torch.stack([torch.sqrt(q @ a_inv @ q) for q in query])
    torch.testing.assert_close(bonus.width(query), expected, rtol=1e-10, atol=1e-12)


def test_normalized_switch_reproduces_reference_formula():
    data, query = _phi(40), _phi(9, seed=2) * 30.0
    alpha, lam = 0.01, 0.001
    bonus = UCBBonus(lam=lam, covariance="normalized").fit(data)
    sigma = data.T @ data / data.shape[0]  # the reference's normalized covariance
    inv = torch.linalg.inv(sigma + lam * torch.eye(5, dtype=torch.float64))
    expected = torch.stack([alpha * torch.sqrt(q @ inv @ q) for q in query])
    torch.testing.assert_close(alpha * bonus.width(query), expected, rtol=1e-10, atol=1e-12)


def test_design_bonus_shrinks_near_new_data_and_stays_far_away():
    e1, e2 = torch.eye(4, dtype=torch.float64)[:2]
    g = torch.Generator().manual_seed(0)
    base = torch.randn(20, 4, generator=g, dtype=torch.float64)
    bonus = UCBBonus(lam=1.0).fit(base)
    near0, far0 = bonus.width(e1).item(), bonus.width(e2).item()
    nearby = e1 + 0.01 * torch.randn(30, 4, generator=g, dtype=torch.float64) * torch.tensor([1.0, 0.0, 1.0, 1.0])
    bonus.update(nearby)
    near1, far1 = bonus.width(e1).item(), bonus.width(e2).item()
    assert near1 < 0.7 * near0  # ~sqrt(20 / 50): the e1 direction now has 50 points instead of ~20
    assert abs(far1 - far0) < 0.02 * far0
    # The normalized covariance does not shrink when the same kind of data keeps arriving.
    ref = UCBBonus(lam=1e-3, covariance="normalized").fit(base)
    before = ref.width(e1).item()
    ref.update(torch.randn(2000, 4, generator=g, dtype=torch.float64))
    assert ref.width(e1).item() > 0.7 * before


def test_update_equals_refit():
    a, b, q = _phi(10), _phi(6, seed=3), _phi(4, seed=4)
    for cov in ("design", "normalized"):
        incremental = UCBBonus(covariance=cov).fit(a).update(b)
        full = UCBBonus(covariance=cov).fit(torch.cat([a, b]))
        torch.testing.assert_close(incremental.width(q), full.width(q))


def test_unknown_covariance_rejected():
    with pytest.raises(ValueError, match="design"):
        UCBBonus(covariance="diag")


def test_surrogate_bonus_uses_design_matrix_of_last_hidden_layer():
    x, y = toy_data(dtype=torch.float64)
    model = MLPUCBSurrogate(D, lam=0.5, dtype="float64", **SMALL_MLP)
    model.fit(x, y, seed=0)
    phi = model.features(x).detach()
    assert phi.shape == (x.shape[0], SMALL_MLP["hidden"][-1])
    a_inv = torch.linalg.inv(0.5 * torch.eye(phi.shape[1], dtype=torch.float64) + phi.T @ phi)
    q = torch.randn(5, D, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    phi_q = model.features(q)
    width = model.bonus.scale * torch.einsum("bi,ij,bj->b", phi_q, a_inv, phi_q).sqrt()  # calibrated scale
    mean, std = model.posterior(q)
    torch.testing.assert_close(std, width)
    torch.testing.assert_close(UCB(model, beta=2.0)(q), mean + 2.0 * width)
    _, pred_std = model.posterior(q, observation_noise=True)
    torch.testing.assert_close(pred_std, (width**2 + model.noise_std**2).sqrt())


def test_gradients_match_finite_differences():
    x, y = toy_data(n=40, dtype=torch.float64)
    model = MLPUCBSurrogate(D, dtype="float64", **SMALL_MLP)
    model.fit(x, y, seed=0)
    q = torch.randn(3, D, dtype=torch.float64, generator=torch.Generator().manual_seed(1), requires_grad=True)
    assert torch.autograd.gradcheck(lambda f: model.posterior(f), (q,), eps=1e-6, atol=1e-5)
    assert torch.autograd.gradcheck(UCB(model, beta=1.0), (q,), eps=1e-6, atol=1e-5)


def test_early_stopping_restores_a_copy_of_the_best_epoch():
    x, y = toy_data(n=60)
    net = BatchedMLP(D, (64, 8), num_heads=1, generator=torch.Generator().manual_seed(0))
    train, val = torch.arange(0, 45).unsqueeze(0), torch.arange(45, 60)
    info = fit_batched_mlp(
        net,
        x,
        y,
        train,
        val,
        generator=torch.Generator().manual_seed(1),
        lr=1e-2,
        max_epochs=200,
        patience=5,
        batch_size=16,
    )
    assert info["epochs"] < 200 and info["epochs"] >= info["best_epoch"][0] + 5
    with torch.no_grad():
        val_mse = ((net(x[val])[0] - y[val]) ** 2).mean().item()
    assert val_mse == pytest.approx(info["best_val_mse"][0], rel=1e-5)


def test_fit_is_reproducible_and_warm_start_keeps_weights():
    x, y = toy_data(n=60)
    a = MLPUCBSurrogate(D, **SMALL_MLP)
    b = MLPUCBSurrogate(D, **SMALL_MLP)
    a.fit(x, y, seed=3)
    b.fit(x, y, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(a.posterior(x), b.posterior(x))
    before = [p.detach().clone() for p in a.net.parameters()]
    info = a.fit(x, y, seed=4, warm_start=True, round=2)
    assert info["warm_start"] and a.round == 2
    # a warm start begins from the previous weights: the result stays close to them
    drift = max((p - q).abs().max().item() for p, q in zip(a.net.parameters(), before))
    fresh = MLPUCBSurrogate(D, **SMALL_MLP)
    fresh.fit(x, y, seed=4)
    far = max((p - q).abs().max().item() for p, q in zip(fresh.net.parameters(), before))
    assert drift < far
