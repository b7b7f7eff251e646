"""Batch acquisitions over a candidate pool and round 0's covering rules, on a closed-form posterior."""

from __future__ import annotations

import pytest
import torch

from surrogate.batch_selection import BATCH_RULES, cover, select_batch
from surrogate.posterior import Posterior


class KnownPosterior:
    """A surrogate whose posterior is set in closed form: mean ``features @ weights``, one std everywhere."""

    def __init__(self, weights: torch.Tensor, std: float = 0.05):
        self.weights, self.std = weights, std

    def posterior(self, features: torch.Tensor) -> Posterior:
        mean = features @ self.weights
        return Posterior(mean, torch.full_like(mean, self.std))


def _generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# the values along the first feature: the best three are at indices 5, 2 and 7 (in that order)
LINE = torch.tensor([[0.1, 0.0], [0.4, 0.3], [2.0, 0.1], [0.9, 0.2], [0.0, 0.5], [3.0, 0.0], [0.5, 0.4], [1.5, 0.3]])
SURROGATE = KnownPosterior(torch.tensor([1.0, 0.0]))


@pytest.mark.parametrize("rule", BATCH_RULES)
def test_a_known_posterior_picks_the_known_best_batch(rule):
    picked = select_batch(SURROGATE, LINE, 3, rule, _generator(), beta=1.0, baseline=LINE[:2], radius=0.01)
    assert picked.tolist() == [5, 2, 7]


@pytest.mark.parametrize("rule", BATCH_RULES)
def test_duplicate_candidates_are_never_picked_twice(rule):
    pool = torch.cat([LINE[5:6].repeat(4, 1), LINE[:2]])  # four copies of the best point, two others
    picked = select_batch(SURROGATE, pool, 5, rule, _generator(), baseline=LINE[:2])
    assert len(set(picked.tolist())) == 5 and sorted(picked.tolist()) == sorted(set(picked.tolist()))
    assert picked.shape == (5,) and picked.min() >= 0 and picked.max() < 6
    if rule != "penalized":  # the value rules take every copy of the best (penalisation spreads out instead)
        assert set(picked.tolist()) >= {0, 1, 2, 3}


def test_penalisation_spreads_the_batch_over_two_clusters_that_tie():
    # two tight clusters of equal value (the second a hair below), far apart in the second feature
    cluster_a = torch.tensor([[1.0, 0.0], [1.0, 0.01], [1.0, 0.02]])
    cluster_b = torch.tensor([[0.999, 5.0], [0.999, 5.01], [0.999, 5.02]])
    pool = torch.cat([cluster_a, cluster_b])
    greedy = select_batch(SURROGATE, pool, 2, "qucb", _generator())
    spread = select_batch(SURROGATE, pool, 2, "penalized", _generator())
    assert set(greedy.tolist()) <= {0, 1, 2}  # a diagonal posterior: the two best points, one cluster
    assert {int(i) // 3 for i in spread} == {0, 1}  # one from each cluster


def test_the_botorch_rules_are_seeded_by_the_generator():
    noisy = KnownPosterior(torch.tensor([1.0, 0.0]), std=2.0)
    pool = torch.randn(30, 2, generator=_generator(3))
    a = select_batch(noisy, pool, 4, "qlognei", _generator(1), baseline=pool[:5])
    b = select_batch(noisy, pool, 4, "qlognei", _generator(1), baseline=pool[:5])
    assert torch.equal(a, b)


def test_bad_requests_are_refused():
    with pytest.raises(ValueError, match="Unknown batch acquisition"):
        select_batch(SURROGATE, LINE, 2, "nope", _generator())
    with pytest.raises(ValueError, match="Cannot pick 9 of 8"):
        select_batch(SURROGATE, LINE, 9, "qucb", _generator())
    with pytest.raises(ValueError, match="baseline"):
        select_batch(SURROGATE, LINE, 2, "qlognei", _generator())
    with pytest.raises(ValueError, match="Unknown covering rule"):
        cover(LINE, 2, "first", _generator())


def _clusters(count: int, size: int, seed: int = 0) -> torch.Tensor:
    """`count` tight clusters of `size` points, far apart: `(count·size, 3)`, cluster ``i`` at rows ``i·size...``."""
    generator = _generator(seed)
    centres = torch.randn(count, 3, generator=generator) * 50
    return (centres.repeat_interleave(size, 0) + 0.01 * torch.randn(count * size, 3, generator=generator)).float()


@pytest.mark.parametrize("rule", ["maximin", "kmeanspp"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_round_zero_covering_picks_one_point_of_each_cluster(rule, seed):
    points = _clusters(5, 8, seed)
    picked = cover(points, 5, rule, _generator(seed))
    assert sorted(int(i) // 8 for i in picked) == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("rule", ["maximin", "kmeanspp"])
def test_covering_never_picks_a_point_twice_when_points_repeat(rule):
    points = torch.zeros(6, 2)
    points[5] = 1.0
    picked = cover(points, 4, rule, _generator())
    assert len(set(picked.tolist())) == 4 and 5 in picked.tolist()
