"""Surrogate reward models with uncertainty: feature vectors -> (mean, std, optimistic score).

Kinds (``make_surrogate(kind, **kwargs)``):

* ``"ucb"``: :class:`MLPUCBSurrogate`, MLP + last-layer UCB bonus `β·sqrt(φᵀA⁻¹φ)`
  (design matrix by default, the reference's normalized covariance as a switch);
* ``"bootstrap"``: :class:`BootstrapEnsembleSurrogate`, M heads trained in one vectorized pass;
* ``"gp"``: :class:`GPSurrogate` on PCA-reduced features: botorch's exact ``SingleTaskGP`` up to
  ``max_points`` answers, a sparse variational GP on every answer above (``method="auto"``);
* ``"greedy"``: :class:`GreedyMLPSurrogate`, the mean-only setting of the UCB surrogate (`β` fixed
  at 0: the MLP mean without optimism, no posterior draws).

Checkpoints are single safetensors files whose metadata carries the JSON header (see
:mod:`surrogate.checkpoint`); :func:`load_surrogate` reads the header and dispatches. A
checkpoint is untrusted data: its hyperparameters pass :func:`check_hyperparameters` (the
same checker configs use) before anything is built, its tensor names, dtypes and shapes
are compared with what they imply before anything is loaded, and non-finite values are
refused. This package never imports ``das`` or ``online``.

Uncertainty: ``posterior(features)`` gives the mean and a *calibrated* epistemic std (its
`mean ± 2·std` should cover the true reward about 95% of the time on held-out data; the MLP
kinds fit its scale on their validation split, see :mod:`surrogate.ucb` and
:mod:`surrogate.bootstrap`), ``posterior(features, observation_noise=True)`` the predictive
std of a new noisy answer, and ``optimistic`` adds `β` times the calibrated std (clipped, for
UCB). :func:`calibration_metrics` measures coverage at 50/80/95%, NLL and rank correlation on
held-out answers (:mod:`surrogate.calibration`).
"""

from __future__ import annotations

import os

import torch

from surrogate.base import Surrogate
from surrogate.bootstrap import BootstrapEnsembleSurrogate
from surrogate.calibration import CALIBRATION_LEVELS, calibration_metrics
from surrogate.checkpoint import SurrogateCheckpointError, check_header, read_header
from surrogate.gp import GPSurrogate
from surrogate.hyperparameters import HyperparameterError, check_hyperparameters
from surrogate.ucb import GreedyMLPSurrogate, MLPUCBSurrogate, UCBBonus

SURROGATES: dict[str, type[Surrogate]] = {
    MLPUCBSurrogate.kind: MLPUCBSurrogate,
    BootstrapEnsembleSurrogate.kind: BootstrapEnsembleSurrogate,
    GPSurrogate.kind: GPSurrogate,
    GreedyMLPSurrogate.kind: GreedyMLPSurrogate,
}


def make_surrogate(kind: str, **kwargs) -> Surrogate:
    """Build a surrogate by name.

    The keyword arguments pass :func:`check_hyperparameters` first, so a bad value is named
    in one sentence and an oversized model is refused before anything is allocated.

    Args:
        kind: One of ``"ucb"``, ``"bootstrap"``, ``"gp"``, ``"greedy"``.
        **kwargs: The class's constructor keyword arguments (``input_dim`` is required).

    Raises:
        ValueError: For an unknown kind, listing the valid ones.
        HyperparameterError: For an unknown, mistyped or out-of-bounds keyword argument.
    """
    if kind not in SURROGATES:
        raise ValueError(f"Unknown surrogate kind {kind!r}; valid kinds: {sorted(SURROGATES)}.")
    check_hyperparameters(kind, kwargs)
    return SURROGATES[kind](**kwargs)


def load_surrogate(
    path: str | os.PathLike,
    expected_kind: str | None = None,
    expected_input_dim: int | None = None,
    device: torch.device | str = "cpu",
) -> Surrogate:
    """Load any surrogate checkpoint, dispatching on the header's ``kind``; the file is untrusted data.

    The header's hyperparameters are checked before anything is built, the tensor table
    before anything is loaded, and the values after loading (see ``Surrogate.load``).

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
    "CALIBRATION_LEVELS",
    "SURROGATES",
    "BootstrapEnsembleSurrogate",
    "GPSurrogate",
    "GreedyMLPSurrogate",
    "HyperparameterError",
    "MLPUCBSurrogate",
    "Surrogate",
    "SurrogateCheckpointError",
    "UCBBonus",
    "calibration_metrics",
    "check_hyperparameters",
    "load_surrogate",
    "make_surrogate",
    "read_header",
]
