"""Resampling schemes: unbiased offspring counts, bounded counts, invalid weights, registry."""

import math

import pytest
import torch

from das.resampling import (
    RESAMPLERS,
    effective_sample_size,
    get_resampler,
    normalize_log_weights,
    normalized_weights,
)


def _counts(ancestors: torch.Tensor, k: int) -> torch.Tensor:
    return torch.zeros(ancestors.shape[0], k, dtype=torch.long).scatter_add(1, ancestors, torch.ones_like(ancestors))


WEIGHTS = torch.tensor([0.31, 0.02, 0.17, 0.0, 0.05, 0.25, 0.13, 0.07])


@pytest.mark.parametrize("name", sorted(RESAMPLERS))
def test_offspring_counts_are_unbiased(name):
    """E[N_k] = K W_k: the mean count over many independent rows is within 5 standard errors."""
    k, rows = WEIGHTS.numel(), 20000
    log_w = WEIGHTS.log().expand(rows, k).contiguous() + torch.randn(rows, 1)  # scale must not matter
    generator = torch.Generator().manual_seed(1)
    counts = _counts(RESAMPLERS[name](log_w, generator), k).double()
    assert (counts.sum(-1) == k).all()
    expected = k * WEIGHTS.double()
    mean, std = counts.mean(0), counts.std(0)
    stderr = std / math.sqrt(rows)
    deterministic = std == 0
    assert torch.allclose(mean[deterministic], expected[deterministic], atol=1e-9)
    z = (mean - expected)[~deterministic] / stderr[~deterministic]
    assert z.abs().max() < 5, f"{name}: z-scores {z}"
    assert counts[:, 3].max() == 0  # a zero-weight particle never has offspring


@pytest.mark.parametrize("name", ["ssp", "systematic", "residual"])
def test_counts_between_floor_and_ceiling(name):
    k = 16
    generator = torch.Generator().manual_seed(2)
    log_w = 2.0 * torch.randn(3000, k, generator=generator)
    counts = _counts(RESAMPLERS[name](log_w, generator), k)
    scaled = k * normalized_weights(log_w.double())
    assert (counts >= torch.floor(scaled - 1e-9)).all()
    if name != "residual":  # residual's remainder is multinomial: only the floor is guaranteed
        assert (counts <= torch.ceil(scaled + 1e-9)).all()


@pytest.mark.parametrize("name", sorted(RESAMPLERS))
def test_invalid_weights_fall_back_without_out_of_range_indices(name):
    inf, nan = float("inf"), float("nan")
    log_w = torch.tensor(
        [
            [-inf, -inf, -inf, -inf],  # all dead: uniform
            [nan, nan, nan, nan],  # all NaN: uniform
            [nan, 0.0, -inf, 0.0],  # NaN counts as -inf
            [inf, 0.0, inf, 1.0],  # +inf entries share the mass
        ]
    )
    ancestors = RESAMPLERS[name](log_w, torch.Generator().manual_seed(0))
    assert ancestors.shape == (4, 4)
    assert ancestors.min() >= 0 and ancestors.max() < 4
    assert set(ancestors[2].tolist()) <= {1, 3}
    assert set(ancestors[3].tolist()) <= {0, 2}
    if name in ("ssp", "systematic", "residual", "stratified"):
        assert sorted(ancestors[0].tolist()) == [0, 1, 2, 3]  # uniform weights keep every particle


def test_normalize_and_ess():
    log_w = torch.log(torch.tensor([[1.0, 1.0, 2.0], [1.0, 0.0, 0.0]]))
    assert torch.allclose(normalize_log_weights(log_w).exp().sum(-1), torch.ones(2))
    w = torch.tensor([[0.25, 0.25, 0.5], [1.0, 0.0, 0.0]])
    assert torch.allclose(effective_sample_size(log_w), 1.0 / (w**2).sum(-1))


def test_registry_rejects_unknown_names_listing_valid_ones():
    with pytest.raises(ValueError) as err:
        get_resampler("bogus")
    for name in RESAMPLERS:
        assert name in str(err.value)


def test_resampling_is_reproducible_with_the_generator():
    log_w = torch.randn(5, 7)
    a = get_resampler("ssp")(log_w, torch.Generator().manual_seed(3))
    b = get_resampler("ssp")(log_w, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
