"""Thompson draws: functions from the surrogate's posterior whose spread is its std."""

from __future__ import annotations

import pytest
import torch

from surrogate import ThompsonSample, make_surrogate


def fitted(kind: str):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 6, generator=g)
    y = torch.sin(x[:, 0]) + 0.1 * torch.randn(200, generator=g)
    kwargs = {"hidden": (16, 8), "max_epochs": 30, **({"num_heads": 4} if kind == "bootstrap" else {})}
    model = make_surrogate(kind, input_dim=6, **(kwargs if kind != "gp" else {"pca_dim": None, "max_iter": 20}))
    model.fit(x, y, generator=torch.Generator().manual_seed(1))
    return model, torch.randn(5, 6, generator=g)


def test_ucb_draws_spread_like_the_posterior_std_and_are_whole_functions():
    model, query = fitted("ucb")
    with torch.no_grad():
        mean, std = model.posterior(query)
        draws = torch.stack([ThompsonSample(model, torch.Generator().manual_seed(i))(query) for i in range(4000)])
    # z ~ N(0, I): the draws' mean and std at each point are the posterior's, within Monte Carlo error
    assert torch.allclose(draws.mean(0), mean, atol=4 * float(std.max()) / 4000**0.5)
    assert torch.allclose(draws.std(0), std, rtol=0.06)
    one = ThompsonSample(model, torch.Generator().manual_seed(7))
    assert torch.equal(one(query), one(query))  # one function, not fresh noise per call
    assert torch.allclose(one(query[:2]), one(query)[:2], rtol=0, atol=1e-6)  # low bits depend on the batch size


def test_ucb_draw_is_differentiable_in_the_features():
    model, query = fitted("ucb")
    query = query.clone().requires_grad_(True)
    ThompsonSample(model, torch.Generator().manual_seed(3))(query).sum().backward()
    assert query.grad is not None and torch.isfinite(query.grad).all() and query.grad.abs().sum() > 0


def test_bootstrap_draws_one_head_and_the_gp_has_none():
    model, query = fitted("bootstrap")
    heads = model.head_predictions(query)
    drawn = set()
    for seed in range(30):
        score = ThompsonSample(model, torch.Generator().manual_seed(seed))(query)
        matches = [m for m in range(model.num_heads) if torch.equal(score, heads[m])]
        assert len(matches) == 1
        drawn.add(matches[0])
    assert drawn == set(range(model.num_heads))  # every head is drawn
    gp, _ = fitted("gp")
    with pytest.raises(ValueError, match="'thompson' acquisition needs a surrogate with 'sample'"):
        ThompsonSample(gp, torch.Generator().manual_seed(0))
