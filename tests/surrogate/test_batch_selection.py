"""Batch acquisitions over a pool and round 0's covering rules, on closed-form posteriors (and the GP's joint)."""

from __future__ import annotations

import pytest
import torch

from surrogate.batch_selection import BATCH_RULES, JITTER, _botorch_model_class, cover, select_batch
from surrogate.gp import GPSurrogate
from surrogate.posterior import Posterior


class KnownPosterior:
    """A surrogate whose posterior is set in closed form: mean ``features @ weights``, one std everywhere."""

    def __init__(self, weights: torch.Tensor, std: float = 0.05):
        self.weights, self.std = weights, std

    def posterior(self, features: torch.Tensor) -> Posterior:
        mean = features @ self.weights
        return Posterior(mean, torch.full_like(mean, self.std))


class KnownJoint(KnownPosterior):
    """:class:`KnownPosterior` with a joint: an RBF covariance ``std² exp(-|x - x'|² / 2)`` (capability "joint")."""

    capabilities = frozenset({"joint"})

    def joint_posterior(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        covariance = self.std**2 * torch.exp(-0.5 * torch.cdist(features, features).pow(2))
        return features @ self.weights, covariance


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


# ------------------------------------------------------------------------------------ per-query Thompson draws
@pytest.mark.parametrize("cls", [KnownPosterior, KnownJoint])
def test_thompson_picks_the_known_best_when_the_std_vanishes(cls):
    surrogate = cls(torch.tensor([1.0, 0.0]), std=1e-6)
    assert select_batch(surrogate, LINE, 4, "thompson", _generator(3)).tolist() == [5, 2, 7, 3]


@pytest.mark.parametrize("cls", [KnownPosterior, KnownJoint])
def test_thompson_with_a_huge_std_spreads_its_picks(cls):
    surrogate = cls(torch.tensor([1.0, 0.0]), std=1e3)
    batches = [select_batch(surrogate, LINE, 3, "thompson", _generator(seed)).tolist() for seed in range(40)]
    assert all(len(set(batch)) == 3 for batch in batches)
    assert {i for batch in batches for i in batch} == set(range(8))  # every candidate is picked sometimes
    assert len({batch[0] for batch in batches}) >= 4  # and the first pick varies


@pytest.mark.parametrize("cls", [KnownPosterior, KnownJoint])
def test_thompson_never_picks_a_copy_twice_and_is_seeded(cls):
    surrogate = cls(torch.tensor([1.0, 0.0]), std=1.0)
    pool = torch.cat([LINE[5:6].repeat(4, 1), LINE[:2]])  # four copies of the best point (one draw under the joint)
    picked = select_batch(surrogate, pool, 6, "thompson", _generator(1))
    assert sorted(picked.tolist()) == list(range(6))
    pool = torch.randn(30, 2, generator=_generator(3))
    a = select_batch(surrogate, pool, 5, "thompson", _generator(7))
    assert torch.equal(a, select_batch(surrogate, pool, 5, "thompson", _generator(7)))
    assert any(not torch.equal(a, select_batch(surrogate, pool, 5, "thompson", _generator(s))) for s in range(3))


def test_thompson_draws_jointly_when_the_surrogate_offers_it():
    # two neighbours, correlation 0.99995 under the joint, the second's mean 0.5 std above the first's: in a
    # joint draw the second is (almost surely) above the first; in independent draws the first wins 36% of them
    pool = torch.tensor([[0.0, 0.0], [0.01, 0.0]])
    weights = torch.tensor([50.0, 0.0])

    def first_picks(surrogate) -> list[int]:
        return [int(select_batch(surrogate, pool, 1, "thompson", _generator(seed))[0]) for seed in range(40)]

    assert first_picks(KnownJoint(weights, std=1.0)) == [1] * 40
    assert 0 in first_picks(KnownPosterior(weights, std=1.0))


# ------------------------------------------------------------------------------ the botorch rules' joint
def test_the_botorch_model_gives_each_q_set_its_joint_covariance():
    points = torch.randn(2, 3, 2, generator=_generator(5))  # botorch's (batch, q, D)
    joint = KnownJoint(torch.tensor([1.0, -1.0]), std=0.5)
    posterior = _botorch_model_class()(joint).posterior(points)
    assert posterior.mean.shape == (2, 3, 1)
    for i in range(2):
        mean, covariance = joint.joint_posterior(points[i])
        expected = covariance + JITTER * 0.25 * torch.eye(3)
        torch.testing.assert_close(posterior.mean[i, :, 0], mean)
        torch.testing.assert_close(posterior.distribution.covariance_matrix[i], expected)
    diagonal = _botorch_model_class()(KnownPosterior(torch.tensor([1.0, -1.0]), std=0.5)).posterior(points)
    torch.testing.assert_close(diagonal.distribution.covariance_matrix, 0.25 * torch.eye(3).expand(2, 3, 3))


def test_qucb_with_a_joint_does_not_take_a_copy_of_its_first_pick():
    # A and its copy are the best; B, far away (independent of A), is nearly as good
    pool = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.98, 10.0], [0.0, 20.0]])
    weights = torch.tensor([1.0, 0.0])
    joint = select_batch(KnownJoint(weights, std=0.1), pool, 2, "qucb", _generator())
    diagonal = select_batch(KnownPosterior(weights, std=0.1), pool, 2, "qucb", _generator())
    assert joint.tolist() == [0, 2] and diagonal.tolist() == [0, 1]


# ------------------------------------------------------------------------------------- the GP's joint
class DiagonalOnly:
    """A surrogate's posterior without its joint (what the botorch rules saw of the GP before it had one)."""

    def __init__(self, surrogate) -> None:
        self.surrogate = surrogate

    def posterior(self, features: torch.Tensor) -> Posterior:
        return self.surrogate.posterior(features)


def _gp_data(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """20 random points in the unit cube of R³ and a smooth function of them."""
    x = torch.rand(20, 3, generator=_generator(seed))
    return x, torch.sin(3 * x[:, 0]) + x[:, 1] ** 2


@pytest.mark.parametrize("settings", [{}, dict(method="sparse", inducing_points=8, epochs=2, max_points=10)])
def test_the_gp_joint_posterior_has_the_posterior_on_its_diagonal(settings):
    x, y = _gp_data()
    gp = GPSurrogate(input_dim=3, **settings)
    gp.fit(x, y, seed=0)
    assert "joint" in gp.capabilities and gp.sparse == bool(settings)
    query = torch.rand(15, 3, generator=_generator(1))
    mean, covariance = gp.joint_posterior(query)
    expected_mean, std = gp.posterior(query)
    assert mean.shape == (15,) and covariance.shape == (15, 15) and covariance.dtype == gp.dtype
    torch.testing.assert_close(mean, expected_mean.detach())
    torch.testing.assert_close(torch.diagonal(covariance), std.detach().pow(2), rtol=1e-4, atol=1e-9)
    torch.testing.assert_close(covariance, covariance.T)
    assert float(torch.linalg.eigvalsh(covariance.double()).min()) > -1e-6 * float(covariance.diagonal().max())
    assert float(covariance.triu(1).abs().max()) > 0.1 * float(covariance.diagonal().min())  # not diagonal
    sets = torch.rand(4, 5, 3, generator=_generator(2))  # independent sets of points at once
    batch_mean, batch_covariance = gp.joint_posterior(sets)
    one_mean, one_covariance = gp.joint_posterior(sets[2])
    torch.testing.assert_close(batch_mean[2], one_mean)
    torch.testing.assert_close(batch_covariance[2], one_covariance)


def test_qucb_on_a_gp_takes_a_distinct_candidate_over_a_copy_of_its_first_pick():
    # Designed to fail with a diagonal posterior (asserted below with DiagonalOnly: a copy of the first pick is
    # an independent draw as good as it) and pass with the joint (the copy is the pick itself: it adds only what
    # the jitter lets it). Data and pool are chosen where a distinct candidate is nearly as good (its qUCB samples
    # exceed the pending pick's now and then); where none is, the copy's jitter-sized gain still wins.
    x, y = _gp_data()
    gp = GPSurrogate(input_dim=3)
    gp.fit(x, y, seed=0)
    pool = torch.rand(30, 3, generator=_generator(1))
    mean, std = gp.posterior(pool)
    best = int((mean + std).argmax())
    pool = torch.cat([pool, pool[best : best + 1]])  # candidate 30 is a copy of the best
    joint = select_batch(gp, pool, 2, "qucb", _generator(1)).tolist()
    diagonal = select_batch(DiagonalOnly(gp), pool, 2, "qucb", _generator(1)).tolist()
    assert diagonal == [best, 30]  # independent Gaussians: the copy looks as good as the original
    assert joint[0] == best and joint[1] not in (best, 30)  # the joint: the copy adds nothing
