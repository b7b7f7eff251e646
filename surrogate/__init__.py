"""Surrogate reward models with uncertainty: feature vectors -> (mean, std, optimistic score).

Kinds (``make_surrogate(kind, **kwargs)``):

* ``"ucb"``: :class:`MLPUCBSurrogate`, MLP + last-layer UCB bonus `β·sqrt(φᵀA⁻¹φ)`
  (design matrix by default, the reference's normalized covariance as a switch);
* ``"bootstrap"``: :class:`BootstrapEnsembleSurrogate`, M heads trained in one vectorized pass;
* ``"gp"``: :class:`GPSurrogate`, botorch ``SingleTaskGP`` on PCA-reduced features;
* ``"greedy"``: :class:`GreedyMLPSurrogate`, the MLP mean without optimism.

Checkpoints are single safetensors files whose metadata carries the JSON header (see
:mod:`surrogate.checkpoint`); :func:`load_surrogate` reads the header and dispatches.
This package never imports ``das`` or ``online``.
"""

from __future__ import annotations

import os

import torch

from surrogate.base import Surrogate
from surrogate.bootstrap import BootstrapEnsembleSurrogate
from surrogate.checkpoint import SurrogateCheckpointError, check_header, load_checkpoint, read_header
from surrogate.gp import GPSurrogate
from surrogate.ucb import GreedyMLPSurrogate, MLPUCBSurrogate, UCBBonus

SURROGATES: dict[str, type[Surrogate]] = {
    MLPUCBSurrogate.kind: MLPUCBSurrogate,
    BootstrapEnsembleSurrogate.kind: BootstrapEnsembleSurrogate,
    GPSurrogate.kind: GPSurrogate,
    GreedyMLPSurrogate.kind: GreedyMLPSurrogate,
}


def make_surrogate(kind: str, **kwargs) -> Surrogate:
    """Build a surrogate by name.

    Args:
        kind: One of ``"ucb"``, ``"bootstrap"``, ``"gp"``, ``"greedy"``.
        **kwargs: The class's constructor keyword arguments (``input_dim`` is required).

    Raises:
        ValueError: For an unknown kind, listing the valid ones.
    """
    if kind not in SURROGATES:
        raise ValueError(f"Unknown surrogate kind {kind!r}; valid kinds: {sorted(SURROGATES)}.")
    return SURROGATES[kind](**kwargs)


def load_surrogate(
    path: str | os.PathLike,
    expected_kind: str | None = None,
    expected_input_dim: int | None = None,
    device: torch.device | str = "cpu",
) -> Surrogate:
    """Load any surrogate checkpoint, dispatching on the header's ``kind``.

    Args:
        path: Checkpoint written by ``Surrogate.save``.
        expected_kind: If given, the checkpoint must be of this kind.
        expected_input_dim: If given, the checkpoint must take features of this dimension.
        device: Where to put the model.

    Raises:
        SurrogateCheckpointError: Missing, truncated, pickle or foreign file, or a mismatch
            with what was expected (the message names it); nothing in the file is executed.
    """
    if expected_kind is not None and expected_kind not in SURROGATES:
        raise ValueError(f"Unknown surrogate kind {expected_kind!r}; valid kinds: {sorted(SURROGATES)}.")
    header = read_header(path)
    check_header(header, path, expected_kind, expected_input_dim)
    if header["kind"] not in SURROGATES:
        raise SurrogateCheckpointError(
            f"Checkpoint {str(path)!r} holds an unknown surrogate kind {header['kind']!r}; valid kinds: {sorted(SURROGATES)}."
        )
    cls = SURROGATES[header["kind"]]
    tensors, header = load_checkpoint(path, expected_kind=header["kind"], expected_input_dim=expected_input_dim)
    return cls._from_checkpoint(tensors, header, device)


__all__ = [
    "SURROGATES",
    "BootstrapEnsembleSurrogate",
    "GPSurrogate",
    "GreedyMLPSurrogate",
    "MLPUCBSurrogate",
    "Surrogate",
    "SurrogateCheckpointError",
    "UCBBonus",
    "load_surrogate",
    "make_surrogate",
    "read_header",
]
