"""Acquisitions: how optimistic to be, apart from the models (as botorch keeps them apart).

An acquisition is bound to a fitted surrogate and maps features `(..., D)` to scores `(...)`,
differentiably (the sampler takes their gradient); it reads only the surrogate's posterior
(:class:`surrogate.posterior.Posterior`), so each one acts on every kind whose ``capabilities``
include what it ``requires``:

* :class:`UCB` (``"ucb"``): mean + `min(β·std, clip)`, SEIKO's upper confidence bound (the
  reference clips the bonus at 10); `β = 0` is the mean itself;
* :class:`PosteriorMean` (``"mean"``): the greedy score, and what evaluation samples with;
* :class:`ThompsonSample` (``"thompson"``): one function drawn from the posterior when the
  acquisition is made (requires ``"sample"``), the same draw at every call;
* :class:`MaxOverHeads` (``"max_heads"``): an ensemble's max over its heads, the reference's
  bootstrap optimism (requires ``"heads"``).

:data:`ACQUISITIONS` is the registry by name; :func:`make_acquisition` builds one from plain
settings (each class takes only the settings it names in ``settings``), and
:func:`check_acquisition` says, from the classes alone and before anything is fitted, whether a
surrogate kind offers what an acquisition needs. Adding an acquisition is one class here and one
entry in :data:`ACQUISITIONS`.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Any, ClassVar

import torch

from surrogate.base import Surrogate
from surrogate.posterior import Posterior


class Acquisition(ABC):
    """A score on features from a surrogate's posterior: ``acquisition(features (..., D)) -> (...)``.

    Args:
        surrogate: A fitted surrogate whose class offers every capability in ``requires``.

    Raises:
        ValueError: When the surrogate lacks a capability the acquisition needs.
    """

    name: ClassVar[str] = "abstract"
    #: Capabilities (``Surrogate.capabilities``) the surrogate must offer.
    requires: ClassVar[frozenset[str]] = frozenset()
    #: The keyword settings :func:`make_acquisition` passes to the constructor.
    settings: ClassVar[tuple[str, ...]] = ()
    #: Whether each one is a random draw (a sampler makes a fresh one, with its own generator, per call).
    draws: ClassVar[bool] = False

    def __init__(self, surrogate: Surrogate) -> None:
        check_acquisition(self.name, type(surrogate))
        self.surrogate = surrogate

    def __call__(self, features: torch.Tensor) -> torch.Tensor:
        return self.score(self.surrogate.posterior(features))

    @abstractmethod
    def score(self, posterior: Posterior) -> torch.Tensor:
        """The scores `(...)` of a posterior at features `(..., D)`."""


class UCB(Acquisition):
    """Upper confidence bound: mean + `min(β·std, clip)` (no clip when ``clip`` is None).

    Args:
        surrogate: Any fitted surrogate.
        beta: Optimism `β >= 0` (a multiple of the calibrated std); 0 gives the mean itself.
        clip: Upper clip of the bonus in reward units (SEIKO's reference: 10), or None.

    Raises:
        ValueError: For a negative or non-finite ``beta``, or a ``clip`` that is not > 0.
    """

    name = "ucb"
    settings = ("beta", "clip")

    def __init__(self, surrogate: Surrogate, beta: float = 1.0, clip: float | None = None) -> None:
        super().__init__(surrogate)
        if not _is_number(beta) or not math.isfinite(beta) or beta < 0:
            raise ValueError(f"UCB's beta must be a finite number >= 0, got {beta!r}.")
        if clip is not None and (not _is_number(clip) or not clip > 0 or math.isnan(clip)):
            raise ValueError(f"UCB's clip must be None or a number > 0, got {clip!r}.")
        self.beta = float(beta)
        self.clip = None if clip is None else float(clip)

    def __call__(self, features: torch.Tensor) -> torch.Tensor:
        if self.beta == 0:  # the mean itself: no bonus to compute
            return self.surrogate.mean(features)
        return self.score(self.surrogate.posterior(features))

    def score(self, posterior: Posterior) -> torch.Tensor:
        if self.beta == 0:
            return posterior.mean
        bonus = self.beta * posterior.std
        return posterior.mean + (bonus if self.clip is None else bonus.clamp(max=self.clip))


class PosteriorMean(Acquisition):
    """The posterior mean (greedy; evaluation)."""

    name = "mean"

    def __call__(self, features: torch.Tensor) -> torch.Tensor:
        return self.surrogate.mean(features)

    def score(self, posterior: Posterior) -> torch.Tensor:
        return posterior.mean


class ThompsonSample(Acquisition):
    """One function drawn from the posterior with ``generator`` when made; every call scores with it.

    The generator's state is kept and each call draws from a copy of it, so every call (every
    sampler step) sees the same function; make one per prompt batch for fresh draws.

    Args:
        surrogate: A fitted surrogate with the ``"sample"`` capability.
        generator: The source of the draw.
    """

    name = "thompson"
    requires = frozenset({"sample"})
    settings = ("generator",)
    draws = True

    def __init__(self, surrogate: Surrogate, generator: torch.Generator | None = None) -> None:
        super().__init__(surrogate)
        if generator is None:
            raise ValueError("Thompson sampling needs a generator for its posterior draw.")
        self._device = generator.device
        self._state = generator.get_state()

    def score(self, posterior: Posterior) -> torch.Tensor:
        generator = torch.Generator(device=self._device)
        generator.set_state(self._state)
        return posterior.sample(generator)


class MaxOverHeads(Acquisition):
    """An ensemble's optimism: the max over its heads' predictions."""

    name = "max_heads"
    requires = frozenset({"heads"})

    def score(self, posterior: Posterior) -> torch.Tensor:
        return posterior.heads.max(0).values


#: Every acquisition by name.
ACQUISITIONS: dict[str, type[Acquisition]] = {
    cls.name: cls for cls in (UCB, PosteriorMean, ThompsonSample, MaxOverHeads)
}


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_acquisition(name: str, surrogate_class: type[Surrogate]) -> None:
    """Whether acquisition ``name`` can act on surrogates of ``surrogate_class`` (nothing need be fitted).

    Raises:
        ValueError: One sentence naming the unknown acquisition (and the valid ones), or the
            capability the surrogate kind lacks.
    """
    if name not in ACQUISITIONS:
        raise ValueError(f"Unknown acquisition {name!r}; valid: {sorted(ACQUISITIONS)}.")
    missing = sorted(ACQUISITIONS[name].requires - surrogate_class.capabilities)
    if missing:
        raise ValueError(
            f"The {name!r} acquisition needs a surrogate with {' and '.join(map(repr, missing))}, which the "
            f"{surrogate_class.kind!r} surrogate does not offer."
        )


def make_acquisition(name: str, surrogate: Surrogate, **settings: Any) -> Acquisition:
    """Build acquisition ``name`` on ``surrogate``, passing it the ``settings`` it takes (others are ignored).

    Args:
        name: A key of :data:`ACQUISITIONS`.
        surrogate: A fitted surrogate.
        **settings: e.g. ``beta``, ``clip``, ``generator``.

    Raises:
        ValueError: For an unknown name, a missing capability or an invalid setting.
    """
    check_acquisition(name, type(surrogate))
    cls = ACQUISITIONS[name]
    return cls(surrogate, **{key: value for key, value in settings.items() if key in cls.settings})


__all__ = [
    "ACQUISITIONS",
    "UCB",
    "Acquisition",
    "MaxOverHeads",
    "PosteriorMean",
    "ThompsonSample",
    "check_acquisition",
    "make_acquisition",
]
