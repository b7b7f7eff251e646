"""Choosing a round's queries from a pool of candidates: batch acquisitions over a discrete set.

Queries cost, candidates do not: a round may sample a pool many times larger than its batch and
choose the batch here, from the candidates' features alone (nothing here knows about diffusion).

:func:`select_batch` picks ``batch_size`` distinct candidates by a rule of :data:`BATCH_RULES`:

* ``"qucb"``: botorch's Monte Carlo ``qUpperConfidenceBound``, greedy and sequential over the
  pool (each pick is added to the acquisition's pending points before the next);
* ``"qlognei"``: botorch's ``qLogNoisyExpectedImprovement`` the same way, against the
  surrogate's observed features (``baseline``);
* ``"penalized"``: the optimistic value ``mean + β·std`` with local penalisation in feature
  space: after each pick, every candidate near it loses a Gaussian bump (its width ``radius``
  times the pool's median pairwise distance, its height twice the spread of the pool's values),
  so the next pick comes from elsewhere unless nothing elsewhere is nearly as good;
* ``"thompson"``: per-query Thompson sampling: each pick is the best candidate not yet picked
  under its own independent posterior draw over the whole pool (seeded from ``generator``): a
  joint draw ``mean + L·z`` (``L Lᵀ`` the joint covariance) when the surrogate offers
  ``"joint"``, otherwise independent Gaussians ``mean + std·z``. Ties go to the first index.

The botorch rules see the surrogate through :class:`PosteriorModel`. For a surrogate with the
``"joint"`` capability (the GP, :meth:`surrogate.gp.GPSurrogate.joint_posterior`) it is the
surrogate's joint posterior over each set of points botorch asks about (with a small jitter on
the diagonal), so the sequential greedy choice is batch-aware: a candidate strongly correlated
with a pending pick adds little to the batch (an exact copy of one adds only what the jitter
lets it) and loses to a distinct candidate nearly as good. For the others it is independent Gaussians with the
surrogate's mean and std at each point: a diagonal joint, which conditions nothing on the pending
points: ``qucb`` then picks the top ``batch_size`` single-point values (up to Monte Carlo error),
and ``qlognei``'s pending points only raise the bar each new pick must clear; ``"penalized"``
(or ``"thompson"``) is then the rule that spreads a batch out. The greedy loop over indices is
ours (as ``botorch.optim.optimize_acqf_discrete`` does it, but returning indices and never a
candidate twice even where two share features).

:func:`cover` picks points that cover a set of features (round 0: ``"maximin"``, farthest-point
first; ``"kmeanspp"``, D² sampling), without any surrogate.

Distances are Euclidean in feature space, as the featurizer gives it (scaling every feature by one
number changes no choice; the featurizer decides which directions matter).
"""

from __future__ import annotations

import math
import warnings

import torch

#: The batch acquisitions :func:`select_batch` knows.
BATCH_RULES = ("qucb", "qlognei", "penalized", "thompson")
#: The covering rules :func:`cover` knows.
COVER_RULES = ("maximin", "kmeanspp")
MC_SAMPLES = 256  # quasi-Monte Carlo samples of the botorch rules
DEFAULT_RADIUS = 0.5  # the penalty's width, in median pairwise distances of the pool
JITTER = 1e-8  # added to a joint covariance's diagonal for botorch, relative to its largest variance
CHUNK_ELEMENTS = 2**24  # bounds the joint posterior's work per call: q-sets x q x (q + 1024) elements


def _botorch_model_class():
    """:class:`PosteriorModel`'s class, made on first use (botorch is imported only when a pool is used)."""
    from botorch.models.model import Model
    from botorch.posteriors.gpytorch import GPyTorchPosterior
    from gpytorch.distributions import MultivariateNormal
    from linear_operator.operators import RootLinearOperator

    class PosteriorModel(Model):
        """A botorch ``Model`` over a surrogate: its joint posterior when it offers ``"joint"``, else diagonal."""

        def __init__(self, surrogate) -> None:
            super().__init__()
            self.surrogate = surrogate
            self.joint = "joint" in getattr(surrogate, "capabilities", frozenset())

        @property
        def num_outputs(self) -> int:
            return 1

        def posterior(self, X, output_indices=None, observation_noise=False, posterior_transform=None, **kwargs):
            if self.joint:
                mean, covariance = joint_per_set(self.surrogate, X)
                root = RootLinearOperator(shared_first_factor(covariance, X).to(X.dtype))
                return GPyTorchPosterior(MultivariateNormal(mean.to(X.dtype), root))
            mean, std = self.surrogate.posterior(X.to(torch.float32))
            variance = std.to(X.dtype).pow(2).clamp_min(1e-12)
            covariance = torch.diag_embed(variance)
            return GPyTorchPosterior(MultivariateNormal(mean.to(X.dtype), covariance))

    return PosteriorModel


def joint_per_set(surrogate, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A ``"joint"`` surrogate's posterior over each set of `q` points: mean `(..., q)`, covariance `(..., q, q)`.

    Computed in chunks of sets (at most :data:`CHUNK_ELEMENTS` elements of work each), in float64,
    symmetrised, with :data:`JITTER` times each set's largest variance added to its diagonal (so
    that a set holding two copies of a point still has a Cholesky factor).

    Args:
        surrogate: A fitted surrogate with ``joint_posterior(features (S, q, D)) -> (mean, covariance)``.
        points: `(..., q, D)`.
    """
    lead, q, dim = points.shape[:-2], points.shape[-2], points.shape[-1]
    sets = points.reshape(-1, q, dim).to(torch.float32)
    chunk = max(1, CHUNK_ELEMENTS // (q * (q + 1024)))
    means, covariances = [], []
    for part in sets.split(chunk):
        mean, covariance = surrogate.joint_posterior(part)
        means.append(mean.to(torch.float64))
        covariances.append(covariance.to(torch.float64))
    mean, covariance = torch.cat(means), torch.cat(covariances)
    covariance = 0.5 * (covariance + covariance.transpose(-1, -2))
    largest = torch.diagonal(covariance, dim1=-2, dim2=-1).amax(-1).clamp_min(1e-12)
    eye = torch.eye(q, dtype=covariance.dtype, device=covariance.device)
    covariance = covariance + (JITTER * largest)[:, None, None] * eye
    return mean.reshape(*lead, q), covariance.reshape(*lead, q, q)


def shared_first_factor(covariance: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """A factor `R` `(..., q, q)` with `R Rᵀ = covariance`: the Cholesky factor of the points every set shares first.

    botorch draws a batch's samples as `R·z` with the same base samples `z` for every set. The
    positions where every set holds the same point (the pending picks, ``qlognei``'s baseline) come
    first in the factorization, so their samples depend only on their own base samples and are the
    same whatever the candidate: candidates differ only by what they add to the batch (common
    random numbers), not by a new Monte Carlo error in the pending points' value.

    Args:
        covariance: `(..., q, q)`, positive definite (:func:`joint_per_set`).
        points: The sets `(..., q, D)` it belongs to.
    """
    q = points.shape[-2]
    sets = points.reshape(-1, q, points.shape[-1])
    shared = (sets == sets[:1]).all(-1).all(0)
    order = torch.argsort((~shared).to(torch.int8), stable=True).to(covariance.device)
    factor = _psd_factor(covariance[..., order, :][..., :, order])
    return factor[..., torch.argsort(order), :]


def select_batch(
    surrogate,
    candidate_features: torch.Tensor,
    batch_size: int,
    rule: str,
    generator: torch.Generator,
    *,
    beta: float = 1.0,
    baseline: torch.Tensor | None = None,
    radius: float = DEFAULT_RADIUS,
) -> torch.Tensor:
    """The indices `(batch_size,)` of the candidates a batch acquisition picks, in the order picked.

    Args:
        surrogate: A fitted surrogate (``posterior(features) -> (mean, std)``).
        candidate_features: The pool `(M, D)`.
        batch_size: How many to pick, ``1 <= batch_size <= M``.
        rule: One of :data:`BATCH_RULES`.
        generator: The source of the botorch rules' Monte Carlo seed and of ``thompson``'s draws.
        beta: The optimism: UCB ``mean + β·std`` (``qucb`` passes ``β²``, botorch's scale); ``thompson``
            ignores it.
        baseline: ``qlognei``'s observed features `(n, D)` (the surrogate's training inputs).
        radius: ``penalized``'s penalty width, in median pairwise distances of the pool.

    Raises:
        ValueError: For an unknown rule, a batch larger than the pool, or ``qlognei`` without a baseline.
    """
    count = candidate_features.shape[0]
    if rule not in BATCH_RULES:
        raise ValueError(f"Unknown batch acquisition {rule!r}; valid: {list(BATCH_RULES)}.")
    if not 1 <= batch_size <= count:
        raise ValueError(f"Cannot pick {batch_size} of {count} candidates.")
    features = candidate_features.float()
    baseline = None if baseline is None else baseline.float().to(features.device)
    with torch.no_grad():
        if rule == "penalized":
            return _penalized(surrogate, features, batch_size, beta, radius)
        if rule == "thompson":
            return _thompson(surrogate, features, batch_size, generator)
        mean, std = surrogate.posterior(features)
        single = (mean + beta * std).float().reshape(-1).cpu()
        acquisition = _botorch_acquisition(surrogate, rule, generator, beta, baseline)
        return _greedy_botorch(acquisition, features, batch_size, single)


def _botorch_acquisition(surrogate, rule: str, generator: torch.Generator, beta: float, baseline):
    """botorch's MC acquisition for `rule` on :class:`PosteriorModel` (a QMC sampler seeded from `generator`)."""
    from botorch.acquisition.logei import qLogNoisyExpectedImprovement
    from botorch.acquisition.monte_carlo import qUpperConfidenceBound
    from botorch.sampling.normal import SobolQMCNormalSampler

    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
    sampler = SobolQMCNormalSampler(sample_shape=torch.Size([MC_SAMPLES]), seed=seed)
    model = _botorch_model_class()(surrogate)
    if rule == "qucb":
        return qUpperConfidenceBound(model, beta=float(beta) ** 2, sampler=sampler)
    if baseline is None or baseline.shape[0] == 0:
        raise ValueError("qlognei needs the surrogate's observed features as its baseline.")
    return qLogNoisyExpectedImprovement(
        model, X_baseline=baseline.float(), sampler=sampler, prune_baseline=False, cache_root=False
    )


def _greedy_botorch(acquisition, features: torch.Tensor, batch_size: int, single: torch.Tensor) -> torch.Tensor:
    """Sequential greedy: each step scores every candidate not yet picked, given the picks as pending points.

    Candidates whose batch values tie (to ``1e-6`` relative: with a diagonal posterior, a point far below
    the pending ones adds nothing to the batch's maximum) are told apart by their `single` values `(M,)`.
    """
    picked: list[int] = []
    available = torch.ones(features.shape[0], dtype=torch.bool)
    for _ in range(batch_size):
        acquisition.set_X_pending(features[picked] if picked else None)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # botorch's float32 and pending-point notices
            values = acquisition(features.unsqueeze(1)).float().cpu()
        values = torch.where(available, torch.nan_to_num(values, nan=-math.inf), torch.tensor(-math.inf))
        index = _best_of_ties(values, available, single)
        picked.append(index)
        available[index] = False
    return torch.tensor(picked, dtype=torch.long)


def _best_of_ties(values: torch.Tensor, available: torch.Tensor, single: torch.Tensor) -> int:
    """Among the available candidates within ``1e-6`` (relative) of the best value, the one with the best `single`."""
    if not bool(torch.isfinite(values).any()):
        return _first_argmax(torch.where(available, single, torch.tensor(-math.inf)), available)
    best = values.max()
    ties = available & (values >= best - 1e-6 * (1 + best.abs()))
    return _first_argmax(torch.where(ties, single, torch.tensor(-math.inf)), ties)


def _first_argmax(values: torch.Tensor, available: torch.Tensor) -> int:
    """The first index of the largest value among the available ones (the first available if all are -inf)."""
    if not bool(torch.isfinite(values).any()):
        return int(available.nonzero()[0])
    return int((values == values.max()).nonzero()[0])


def _penalized(surrogate, features: torch.Tensor, batch_size: int, beta: float, radius: float) -> torch.Tensor:
    """Optimistic value with local penalisation (see the module's docstring)."""
    mean, std = surrogate.posterior(features)
    values = (mean + beta * std).float().reshape(-1).cpu()
    amplitude = 2 * float(values.max() - values.min()) + 1e-6  # a pick's twin falls below the worst candidate
    points = features.cpu()
    distances = torch.cdist(points, points)
    width = radius * _median_positive(distances)
    picked: list[int] = []
    available = torch.ones(features.shape[0], dtype=torch.bool)
    for _ in range(batch_size):
        masked = torch.where(available, values, torch.tensor(-math.inf))
        index = _first_argmax(masked, available)
        picked.append(index)
        available[index] = False
        values = values - amplitude * torch.exp(-0.5 * (distances[index] / width) ** 2)
    return torch.tensor(picked, dtype=torch.long)


def _thompson(surrogate, features: torch.Tensor, batch_size: int, generator: torch.Generator) -> torch.Tensor:
    """Per-query Thompson sampling: each pick the best candidate not yet picked under its own posterior draw."""
    mean, root = _draw_factor(surrogate, features)
    picked: list[int] = []
    available = torch.ones(features.shape[0], dtype=torch.bool)
    for _ in range(batch_size):
        z = torch.randn(mean.shape[0], generator=generator, dtype=torch.float64)
        draw = mean + (root @ z if root.dim() == 2 else root * z)
        draw = torch.where(available, torch.nan_to_num(draw, nan=-math.inf), torch.tensor(-math.inf))
        index = _first_argmax(draw, available)
        picked.append(index)
        available[index] = False
    return torch.tensor(picked, dtype=torch.long)


def _draw_factor(surrogate, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The pool's posterior mean `(M,)` and a factor of its covariance (float64, CPU).

    With ``"joint"``: `L` `(M, M)` with `L Lᵀ` the joint covariance (:func:`_psd_factor`);
    otherwise the std `(M,)` (a diagonal covariance).
    """
    if "joint" in getattr(surrogate, "capabilities", frozenset()):
        mean, covariance = surrogate.joint_posterior(features)
        return mean.double().reshape(-1).cpu(), _psd_factor(covariance.double().cpu())
    mean, std = surrogate.posterior(features)
    return mean.double().reshape(-1).cpu(), std.double().reshape(-1).cpu()


def _psd_factor(covariance: torch.Tensor) -> torch.Tensor:
    """`L` `(..., M, M)` with `L Lᵀ ≈ covariance`: its Cholesky factor with the least jitter that works, else `V·√λ₊`.

    The jitter is relative to each matrix's largest variance (none first, then ``1e-10`` up to ``1e-4``).
    """
    covariance = 0.5 * (covariance + covariance.transpose(-1, -2))
    eye = torch.eye(covariance.shape[-1], dtype=covariance.dtype, device=covariance.device)
    largest = torch.diagonal(covariance, dim1=-2, dim2=-1).amax(-1).clamp_min(1e-30)[..., None, None]
    for jitter in (0.0, 1e-10, 1e-8, 1e-6, 1e-4):
        factor, info = torch.linalg.cholesky_ex(covariance + jitter * largest * eye)
        if not bool((info != 0).any()):
            return factor
    values, vectors = torch.linalg.eigh(covariance)
    return vectors * values.clamp_min(0.0).sqrt().unsqueeze(-2)


def _median_positive(distances: torch.Tensor) -> float:
    """The median of the positive pairwise distances (1 when every point is the same)."""
    positive = distances[distances > 0]
    return float(positive.median()) if positive.numel() else 1.0


def cover(features: torch.Tensor, count: int, rule: str, generator: torch.Generator) -> torch.Tensor:
    """The indices `(count,)` of points that cover `features` `(M, D)`, in the order picked.

    ``"maximin"``: a first point drawn with `generator`, then each time the point farthest from
    those picked; ``"kmeanspp"``: k-means++ seeding, each point drawn with probability proportional
    to its squared distance to the nearest one picked. Points already picked are never picked
    again, even where several share features.

    Raises:
        ValueError: For an unknown rule or a count larger than the set.
    """
    if rule not in COVER_RULES:
        raise ValueError(f"Unknown covering rule {rule!r}; valid: {list(COVER_RULES)}.")
    if not 1 <= count <= features.shape[0]:
        raise ValueError(f"Cannot pick {count} of {features.shape[0]} points.")
    points = features.float().cpu()
    first = int(torch.randint(0, points.shape[0], (1,), generator=generator))
    picked = [first]
    nearest = torch.cdist(points, points[first : first + 1]).squeeze(1)
    for _ in range(count - 1):
        open_ = torch.ones(points.shape[0], dtype=torch.bool)
        open_[picked] = False
        if rule == "maximin" or not bool((nearest[open_] > 0).any()):
            index = _first_argmax(torch.where(open_, nearest, torch.tensor(-math.inf)), open_)
        else:
            weights = torch.where(open_, nearest.pow(2), torch.zeros(()))
            index = int(torch.multinomial(weights, 1, generator=generator))
        picked.append(index)
        nearest = torch.minimum(nearest, torch.cdist(points, points[index : index + 1]).squeeze(1))
    return torch.tensor(picked, dtype=torch.long)


__all__ = ["BATCH_RULES", "COVER_RULES", "cover", "select_batch"]
