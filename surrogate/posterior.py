"""What ``Surrogate.posterior(features)`` returns: the mean and std at the features, and draws.

A :class:`Posterior` is the pair ``(mean, std)`` (it unpacks as that tuple, so ``mean, std =
surrogate.posterior(x)`` reads as before) with what acquisitions need beyond it:

* :meth:`Posterior.sample`: one function drawn from the surrogate's posterior, evaluated at the
  features. The draw is a whole function: the same generator *state* gives the same function at
  any features, which is how :class:`surrogate.acquisition.ThompsonSample` scores every sampler
  step with one draw. Only surrogates with the ``"sample"`` capability provide it;
* :attr:`Posterior.heads`: an ensemble's per-head predictions `(M, ...)` (capability ``"heads"``).

Everything is a differentiable function of the features.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


class Posterior(tuple):
    """``(mean, std)`` at features `(..., D)`, each of shape `(...)`, plus draws and heads when the kind has them.

    Args:
        mean: Posterior mean `(...)`.
        std: Epistemic std `(...)` (or the predictive std, when asked with ``observation_noise``).
        sampler: ``generator -> (...)``: one posterior function evaluated at the features, or None.
        heads: Per-head predictions `(M, ...)` of an ensemble, or None.
    """

    def __new__(
        cls,
        mean: torch.Tensor,
        std: torch.Tensor,
        *,
        sampler: Callable[[torch.Generator], torch.Tensor] | None = None,
        heads: torch.Tensor | None = None,
    ) -> Posterior:
        posterior = super().__new__(cls, (mean, std))
        posterior._sampler = sampler
        posterior.heads = heads
        return posterior

    @property
    def mean(self) -> torch.Tensor:
        return self[0]

    @property
    def std(self) -> torch.Tensor:
        return self[1]

    def sample(self, generator: torch.Generator) -> torch.Tensor:
        """One function drawn from the posterior with ``generator``, at the features: `(...)`.

        Raises:
            ValueError: For a surrogate without posterior draws (no ``"sample"`` capability).
        """
        if self._sampler is None:
            raise ValueError("This surrogate's posterior has no draws; choose a surrogate kind with 'sample'.")
        return self._sampler(generator)


__all__ = ["Posterior"]
