"""Surrogate reward models with uncertainty, and the acquisitions that score with them.

Kinds (``make_surrogate(kind, **kwargs)``, registry :data:`SURROGATES`):

* ``"ucb"``: :class:`MLPUCBSurrogate`, MLP + calibrated last-layer std `s·sqrt(φᵀA⁻¹φ)`
  (design matrix by default, the reference's normalized covariance as a switch);
* ``"bootstrap"``: :class:`BootstrapEnsembleSurrogate`, M heads trained in one vectorized pass;
* ``"gp"``: :class:`GPSurrogate` on PCA-reduced features: botorch's exact ``SingleTaskGP`` up to
  ``max_points`` answers, a sparse variational GP on every answer above (``method="auto"``).

A surrogate gives a posterior (:mod:`surrogate.posterior`): ``posterior(features)`` is the mean
and a *calibrated* epistemic std (its `mean ± 2·std` should cover the true reward about 95% of
the time on held-out data), ``posterior(features, observation_noise=True)`` the predictive std
of a new noisy answer, and, by kind, posterior draws and per-head predictions.
:func:`calibration_metrics` measures coverage at 50/80/95%, NLL and rank correlation on held-out
answers (:mod:`surrogate.calibration`). How optimistic to be is an acquisition
(:mod:`surrogate.acquisition`: UCB with `β` and a clip, the posterior mean, Thompson sampling,
the max over an ensemble's heads), a run setting, never model state.

Adding a kind is one file (a :class:`Surrogate` subclass that declares its hyperparameter
specs, memory count and capabilities) and one entry in :data:`SURROGATES`.

Checkpoints are single safetensors files whose metadata carries the JSON header (see
:mod:`surrogate.checkpoint`); :func:`load_surrogate` reads the header and dispatches. A
checkpoint is untrusted data: its hyperparameters pass the same checker configs use before
anything is built, its tensor names, dtypes and shapes are compared with what they imply
before anything is loaded, and non-finite values are refused. This package never imports
``das`` or ``online``.

Deprecated (removed in version 0.4.0, :mod:`surrogate.deprecation`): checkpoints of versions
before 0.2 still load, with a ``FutureWarning``: the kind ``"greedy"`` loads as ``"ucb"`` (its
score is the posterior mean), and the acquisition settings those headers kept among the
hyperparameters (``beta`` and ``clip`` of ``"ucb"``, ``beta`` and ``optimism`` of
``"bootstrap"``, ``beta`` of ``"gp"``) are dropped; :func:`read_header` returns what they meant
under ``"legacy_acquisition"``. ``make_surrogate("greedy")`` builds a ``"ucb"`` surrogate, with
the same warning.
"""

from __future__ import annotations

import os

import torch

from surrogate.acquisition import (
    ACQUISITIONS,
    UCB,
    Acquisition,
    MaxOverHeads,
    PosteriorMean,
    ThompsonSample,
    check_acquisition,
    make_acquisition,
)
from surrogate.base import Surrogate
from surrogate.bootstrap import BootstrapEnsembleSurrogate
from surrogate.calibration import CALIBRATION_LEVELS, calibration_metrics
from surrogate.checkpoint import SurrogateCheckpointError, check_header
from surrogate.checkpoint import read_header as read_raw_header
from surrogate.deprecation import deprecate
from surrogate.gp import GPSurrogate
from surrogate.hyperparameters import HyperparameterError, check_class_hyperparameters, constructor_defaults
from surrogate.posterior import Posterior
from surrogate.ucb import MLPUCBSurrogate, UCBBonus

#: Every surrogate kind by name: the one registration a new kind needs.
SURROGATES: dict[str, type[Surrogate]] = {
    MLPUCBSurrogate.kind: MLPUCBSurrogate,
    BootstrapEnsembleSurrogate.kind: BootstrapEnsembleSurrogate,
    GPSurrogate.kind: GPSurrogate,
}


def _deprecated_kinds() -> dict[str, type[Surrogate]]:
    """Pre-0.2 kind names -> the class that loads them now (from the classes' ``deprecated_kinds``)."""
    return {alias: cls for cls in SURROGATES.values() for alias in cls.deprecated_kinds}


def surrogate_class(kind: str, where: str = "surrogate") -> type[Surrogate]:
    """The class of a registered kind (a deprecated kind name gives its class, with a warning).

    Raises:
        HyperparameterError: For an unknown kind, listing the valid ones.
    """
    if kind in SURROGATES:
        return SURROGATES[kind]
    aliases = _deprecated_kinds()
    if isinstance(kind, str) and kind in aliases:
        cls = aliases[kind]
        deprecate(
            f"Surrogate kind {kind!r}",
            f"use kind {cls.kind!r} with the {cls.deprecated_kinds[kind]['kind']!r} acquisition",
        )
        return cls
    raise HyperparameterError(f"Unknown surrogate kind {kind!r} for {where}; valid kinds: {sorted(SURROGATES)}.")


def check_hyperparameters(kind: str, values, *, where: str = "surrogate") -> None:
    """Validate the constructor keyword arguments of surrogate ``kind`` before anything is built.

    See :func:`surrogate.hyperparameters.check_class_hyperparameters`; ``where`` prefixes the
    field in messages (e.g. ``"surrogate.kwargs"``).

    Raises:
        HyperparameterError: One sentence naming an unknown kind or the first bad value.
    """
    check_class_hyperparameters(surrogate_class(kind, where), values, where=where)


def hyperparameter_names(kind: str) -> tuple[str, ...]:
    """The valid hyperparameter names of a surrogate kind (its constructor's keyword arguments)."""
    return tuple(constructor_defaults(surrogate_class(kind)))


def make_surrogate(kind: str, **kwargs) -> Surrogate:
    """Build a surrogate by name.

    The keyword arguments pass :func:`check_hyperparameters` first, so a bad value is named
    in one sentence and an oversized model is refused before anything is allocated.

    Args:
        kind: A key of :data:`SURROGATES` (or the deprecated ``"greedy"``).
        **kwargs: The class's constructor keyword arguments (``input_dim`` is required).

    Raises:
        HyperparameterError: For an unknown kind (listing the valid ones), or an unknown,
            mistyped or out-of-bounds keyword argument.
    """
    cls = surrogate_class(kind)
    check_class_hyperparameters(cls, kwargs)
    return cls(**kwargs)


def read_header(path: str | os.PathLike) -> dict:
    """The header of a surrogate checkpoint in the current format, loading no tensor; the file is untrusted.

    A pre-0.2 header is upgraded with a deprecation warning (see the module docstring); the
    acquisition settings it meant are under ``"legacy_acquisition"``.

    Raises:
        SurrogateCheckpointError: As :func:`surrogate.checkpoint.read_header`.
    """
    header = read_raw_header(path)
    cls = SURROGATES.get(header["kind"]) or _deprecated_kinds().get(header["kind"])
    return header if cls is None else cls.upgrade_header(header, path)


def load_surrogate(
    path: str | os.PathLike,
    expected_kind: str | None = None,
    expected_input_dim: int | None = None,
    device: torch.device | str = "cpu",
) -> Surrogate:
    """Load any surrogate checkpoint, dispatching on the header's ``kind``; the file is untrusted data.

    The header's hyperparameters are checked before anything is built, the tensor table
    before anything is loaded, and the values after loading (see ``Surrogate.load``). A
    pre-0.2 checkpoint loads with a deprecation warning (see the module docstring).

    Args:
        path: Checkpoint written by ``Surrogate.save``.
        expected_kind: If given, the checkpoint must be of this kind.
        expected_input_dim: If given, the checkpoint must take features of this dimension.
        device: Where to put the model.

    Raises:
        SurrogateCheckpointError: Missing, truncated, pickle or foreign file, a mismatch
            with what was expected, invalid hyperparameters, tensors that disagree with them,
            or non-finite values (the message names the file and the field or tensor);
            nothing in the file is executed.
    """
    if expected_kind is not None and expected_kind not in SURROGATES:
        raise ValueError(f"Unknown surrogate kind {expected_kind!r}; valid kinds: {sorted(SURROGATES)}.")
    header = read_header(path)
    check_header(header, path, expected_kind, expected_input_dim)
    if header["kind"] not in SURROGATES:
        raise SurrogateCheckpointError(
            f"Checkpoint {str(path)!r} holds an unknown surrogate kind {header['kind']!r}; "
            f"valid kinds: {sorted(SURROGATES)}."
        )
    return SURROGATES[header["kind"]]._load_untrusted(path, header, device)


__all__ = [
    "ACQUISITIONS",
    "CALIBRATION_LEVELS",
    "SURROGATES",
    "UCB",
    "Acquisition",
    "BootstrapEnsembleSurrogate",
    "GPSurrogate",
    "HyperparameterError",
    "MLPUCBSurrogate",
    "MaxOverHeads",
    "Posterior",
    "PosteriorMean",
    "Surrogate",
    "SurrogateCheckpointError",
    "ThompsonSample",
    "UCBBonus",
    "calibration_metrics",
    "check_acquisition",
    "check_header",
    "check_hyperparameters",
    "hyperparameter_names",
    "load_surrogate",
    "make_acquisition",
    "make_surrogate",
    "read_header",
    "surrogate_class",
]
