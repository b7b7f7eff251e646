"""The toy: analytic Gaussian-mixture diffusion models with exact scores and exact tilted targets.

* :mod:`das.toy.mixtures`: the mixtures, quadratic rewards, their closed-form tilts and the EMD;
* :mod:`das.toy.adapter`: :class:`ToyAdapter`, the exact-score diffusion model over a mixture;
* :mod:`das.toy.demo`: ``python -m das.toy.demo``, DAS against the exact target on the paper's 2-D toys.

It is where the sampler's exactness is tested against known answers.
"""

from das.toy.mixtures import (
    GaussianMixture,
    QuadraticReward,
    eight_gaussians,
    emd,
    nine_gaussians,
    paper_toy_reward,
    sample_tilted_on_grid,
    tilt_quadratic,
)

__all__ = [
    "GaussianMixture",
    "QuadraticReward",
    "eight_gaussians",
    "emd",
    "nine_gaussians",
    "paper_toy_reward",
    "sample_tilted_on_grid",
    "tilt_quadratic",
]
