"""The surrogate interface and the small helpers every surrogate shares.

A surrogate maps feature vectors `(N, D)` to a posterior mean and standard deviation
`(N,)` and an optimistic score `(N,)` (mean + exploration bonus). Every output is a
differentiable function of the features (the sampler takes their gradient), computed in
one batched pass on the device the model lives on.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

import torch

from surrogate.checkpoint import load_checkpoint, save_checkpoint

_DTYPES = {"float32": torch.float32, "float64": torch.float64}


def dtype_from_name(dtype: str | torch.dtype) -> torch.dtype:
    """Return the torch dtype for ``"float32"`` / ``"float64"`` (or pass a dtype through)."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in _DTYPES:
        raise ValueError(f"Unknown dtype {dtype!r}; valid: {sorted(_DTYPES)}.")
    return _DTYPES[dtype]


def dtype_name(dtype: torch.dtype) -> str:
    """Inverse of :func:`dtype_from_name`."""
    for name, value in _DTYPES.items():
        if value == dtype:
            return name
    raise ValueError(f"Unsupported dtype {dtype}; valid: {sorted(_DTYPES)}.")


def make_generator(generator: torch.Generator | None = None, seed: int | None = None) -> torch.Generator:
    """Return ``generator`` or a fresh CPU generator seeded with ``seed`` (0 if both are None)."""
    if generator is not None:
        return generator
    return torch.Generator().manual_seed(0 if seed is None else int(seed))


def draw_seed(generator: torch.Generator) -> int:
    """Draw a 62-bit integer seed from ``generator`` (to seed device generators / sklearn)."""
    return int(torch.randint(0, 2**62, (1,), generator=generator).item())


class Standardizer:
    """Per-dimension affine standardization `z = (x - mean) / std`, stored as tensors.

    Args:
        dim: Number of dimensions (1 for rewards).
        dtype: Tensor dtype.
    """

    def __init__(self, dim: int, dtype: torch.dtype = torch.float32) -> None:
        self.mean = torch.zeros(dim, dtype=dtype)
        self.std = torch.ones(dim, dtype=dtype)

    def fit(self, x: torch.Tensor, min_std: float = 1e-6, correction: int = 0) -> "Standardizer":
        """Set the statistics from data `x` of shape `(N, dim)` (or `(N,)` when `dim == 1`)."""
        x2 = x.detach().reshape(x.shape[0], -1)
        self.mean = x2.mean(0).to(self.mean.dtype)
        std = x2.std(0, correction=correction) if x2.shape[0] > 1 else torch.ones_like(self.mean)
        self.std = std.clamp_min(min_std).to(self.std.dtype)
        return self

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        """`x (..., dim) -> (x - mean) / std`; differentiable."""
        return (x - self.mean) / self.std

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        """`z (..., dim) -> z * std + mean`; differentiable."""
        return z * self.std + self.mean

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> "Standardizer":
        self.mean = self.mean.to(device=device, dtype=dtype)
        self.std = self.std.to(device=device, dtype=dtype)
        return self

    def state(self, prefix: str) -> dict[str, torch.Tensor]:
        return {f"{prefix}.mean": self.mean, f"{prefix}.std": self.std}

    def load_state(self, tensors: dict[str, torch.Tensor], prefix: str) -> None:
        self.mean = tensors[f"{prefix}.mean"].to(self.mean.dtype)
        self.std = tensors[f"{prefix}.std"].to(self.std.dtype)


def as_feature_matrix(features: torch.Tensor, input_dim: int) -> tuple[torch.Tensor, torch.Size]:
    """Flatten `(..., D)` features to `(N, D)`, returning the leading shape to restore outputs."""
    if features.shape[-1] != input_dim:
        raise ValueError(f"Expected features with last dimension {input_dim}, got shape {tuple(features.shape)}.")
    lead = features.shape[:-1]
    return features.reshape(-1, input_dim), lead


class Surrogate(ABC):
    """Reward model with uncertainty: `(N, D)` features -> mean, std, optimistic score.

    Subclasses set ``kind`` and implement :meth:`fit`, :meth:`posterior`,
    :meth:`optimistic`, :meth:`_state_tensors` and :meth:`_load_state_tensors`. The
    constructor's keyword arguments are the hyperparameters recorded in checkpoints; a
    surrogate is rebuilt on load as ``cls(**header["hyperparameters"])``.

    Args:
        input_dim: Feature dimension `D`.
        dtype: ``"float32"`` or ``"float64"`` (parameters and outputs).
    """

    kind: ClassVar[str] = "abstract"

    def __init__(self, input_dim: int, dtype: str | torch.dtype = "float32") -> None:
        self.input_dim = int(input_dim)
        self.dtype = dtype_from_name(dtype)
        self.device = torch.device("cpu")
        self.n_data = 0
        self.round = 0
        self.fitted = False
        self.fit_info: dict[str, Any] = {}
        self._hparams: dict[str, Any] = {"input_dim": self.input_dim, "dtype": dtype_name(self.dtype)}

    # ----------------------------------------------------------------------------- API
    @abstractmethod
    def fit(
        self,
        features: torch.Tensor,
        rewards: torch.Tensor,
        *,
        generator: torch.Generator | None = None,
        seed: int | None = None,
        round: int | None = None,
        warm_start: bool = False,
    ) -> dict[str, Any]:
        """Fit on features `(N, D)` and rewards `(N,)`; returns a dict of fit statistics."""

    @abstractmethod
    def posterior(self, features: torch.Tensor, *, observation_noise: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Return `(mean, std)`, each of shape `(...)`, for features `(..., D)`.

        With ``observation_noise=True`` the std is the predictive std of a new noisy
        observation (epistemic + noise); otherwise the epistemic std of the mean.
        """

    @abstractmethod
    def optimistic(self, features: torch.Tensor) -> torch.Tensor:
        """Return mean + exploration bonus, shape `(...)`, for features `(..., D)`."""

    def mean(self, features: torch.Tensor) -> torch.Tensor:
        """Posterior mean `(...)` (the evaluation / greedy score)."""
        return self.posterior(features)[0]

    def __call__(self, features: torch.Tensor) -> torch.Tensor:
        """Alias of :meth:`optimistic`."""
        return self.optimistic(features)

    @property
    def hyperparameters(self) -> dict[str, Any]:
        """The constructor keyword arguments (JSON-serializable)."""
        return dict(self._hparams)

    def to(self, device: torch.device | str) -> "Surrogate":
        """Move every tensor to ``device``; returns ``self``."""
        self.device = torch.device(device)
        self._move(self.device)
        return self

    # ------------------------------------------------------------------ checkpointing
    def save(self, path: str | os.PathLike, extra: dict[str, Any] | None = None) -> Path:
        """Write an atomic safetensors checkpoint with the JSON header (see ``surrogate.checkpoint``)."""
        if not self.fitted:
            raise RuntimeError(f"Cannot save an unfitted {self.kind!r} surrogate; call fit() first.")
        header = {
            "kind": self.kind,
            "input_dim": self.input_dim,
            "hyperparameters": self.hyperparameters,
            "n_data": int(self.n_data),
            "round": int(self.round),
            "extra": {**self._extra_header(), **(extra or {})},
        }
        return save_checkpoint(path, self._state_tensors(), header)

    @classmethod
    def load(
        cls,
        path: str | os.PathLike,
        *,
        expected_input_dim: int | None = None,
        device: torch.device | str = "cpu",
    ) -> "Surrogate":
        """Load a checkpoint of this class's kind; mismatches raise ``SurrogateCheckpointError``."""
        tensors, header = load_checkpoint(path, expected_kind=cls.kind, expected_input_dim=expected_input_dim)
        return cls._from_checkpoint(tensors, header, device)

    @classmethod
    def _from_checkpoint(cls, tensors: dict[str, torch.Tensor], header: dict[str, Any], device: torch.device | str) -> "Surrogate":
        model = cls(**header["hyperparameters"])
        model.n_data = int(header["n_data"])
        model.round = int(header["round"])
        model._load_state_tensors(tensors, header)
        model.fitted = True
        return model.to(device)

    # ------------------------------------------------------------- subclass plumbing
    def _extra_header(self) -> dict[str, Any]:
        return {}

    @abstractmethod
    def _state_tensors(self) -> dict[str, torch.Tensor]:
        """All tensors needed to reproduce predictions."""

    @abstractmethod
    def _load_state_tensors(self, tensors: dict[str, torch.Tensor], header: dict[str, Any]) -> None:
        """Inverse of :meth:`_state_tensors`."""

    @abstractmethod
    def _move(self, device: torch.device) -> None:
        """Move internal tensors/modules to ``device``."""

    def _check_fitted(self) -> None:
        if not self.fitted:
            raise RuntimeError(f"The {self.kind!r} surrogate is not fitted; call fit() first.")

    def _prepare_data(self, features: torch.Tensor, rewards: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = features.detach()
        if x.ndim != 2 or x.shape[1] != self.input_dim:
            raise ValueError(f"Expected features of shape (N, {self.input_dim}), got {tuple(x.shape)}.")
        y = rewards.detach().reshape(-1)
        if y.shape[0] != x.shape[0]:
            raise ValueError(f"Got {x.shape[0]} feature rows but {y.shape[0]} rewards.")
        if not (torch.isfinite(x).all() and torch.isfinite(y).all()):
            raise ValueError("Features and rewards must be finite; drop failed queries before fitting.")
        self.device = x.device
        return x.to(self.dtype), y.to(self.dtype)
