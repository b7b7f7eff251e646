"""The surrogate interface and the small helpers every surrogate shares.

A surrogate maps feature vectors `(N, D)` to a posterior mean and standard deviation
`(N,)` and an optimistic score `(N,)` (mean + exploration bonus). Every output is a
differentiable function of the features (the sampler takes their gradient), computed in
one batched pass on the device the model lives on.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import torch

from surrogate.checkpoint import (
    SurrogateCheckpointError,
    TensorInfo,
    check_header,
    load_tensors,
    read_header,
    read_tensor_table,
    save_checkpoint,
    tensor_info,
)

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

    def fit(self, x: torch.Tensor, min_std: float = 1e-6, correction: int = 0) -> Standardizer:
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

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> Standardizer:
        self.mean = self.mean.to(device=device, dtype=dtype)
        self.std = self.std.to(device=device, dtype=dtype)
        return self

    def state(self, prefix: str) -> dict[str, torch.Tensor]:
        return {f"{prefix}.mean": self.mean, f"{prefix}.std": self.std}

    def expected_state(self, prefix: str) -> dict[str, TensorInfo]:
        """Names, dtypes and shapes of :meth:`state`, for checking a checkpoint before loading it."""
        return {
            f"{prefix}.mean": tensor_info(self.mean.dtype, self.mean.shape),
            f"{prefix}.std": tensor_info(self.std.dtype, self.std.shape),
        }

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
    :meth:`optimistic`, :meth:`_state_tensors`, :meth:`_expected_tensors` and
    :meth:`_load_state_tensors`. The constructor's keyword arguments are the hyperparameters
    recorded in checkpoints; a surrogate is rebuilt on load as
    ``cls(**header["hyperparameters"])`` once they have passed
    :func:`surrogate.hyperparameters.check_hyperparameters`.

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
    def posterior(
        self, features: torch.Tensor, *, observation_noise: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
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

    def to(self, device: torch.device | str) -> Surrogate:
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
    ) -> Surrogate:
        """Load a checkpoint of this class's kind, treating the file as untrusted data.

        See :meth:`_load_untrusted` for what is checked, in which order.

        Raises:
            SurrogateCheckpointError: A mismatch with the expected kind or dimension, or a
                file that fails any check (the message names the file and the field or tensor).
        """
        header = read_header(path)
        check_header(header, path, cls.kind, expected_input_dim)
        return cls._load_untrusted(path, header, device)

    @classmethod
    def _load_untrusted(
        cls, path: str | os.PathLike, header: dict[str, Any], device: torch.device | str
    ) -> Surrogate:
        """Rebuild a surrogate from a checkpoint whose header has passed :func:`read_header`.

        Order: (1) the header's hyperparameters pass ``check_hyperparameters`` (bounded
        sizes, so constructing cannot exhaust memory) and agree with its ``input_dim``; (2)
        the model is constructed; (3) the file's tensor table (names, dtypes, shapes) is
        compared with what the model expects, before any tensor is read; (4) the tensors are
        loaded and every floating one must be finite; (5) the kind checks its values
        (positive scales, a valid Cholesky factor...). Nothing in the file is executed.
        """
        from surrogate.hyperparameters import HyperparameterError, check_hyperparameters  # imports the kinds

        where = f"Surrogate checkpoint {str(path)!r} hyperparameters"
        hparams = header["hyperparameters"]
        try:
            check_hyperparameters(cls.kind, hparams, where=where)
        except HyperparameterError as error:
            raise SurrogateCheckpointError(str(error)) from None
        if hparams.get("input_dim") != header["input_dim"]:
            raise SurrogateCheckpointError(
                f"{where}.input_dim is {hparams.get('input_dim')!r} but the header's input_dim is "
                f"{header['input_dim']!r}; re-save the checkpoint."
            )
        try:
            model = cls(**hparams)
        except (TypeError, ValueError) as error:  # a bound the table misses; never expected
            raise SurrogateCheckpointError(f"{where} are refused by {cls.__name__} ({error}).") from None
        model.n_data = int(header["n_data"])
        model.round = int(header["round"])
        expected = model._expected_tensors(read_tensor_table(path), header, str(path))
        tensors = load_tensors(path, expected, fixed=model._fixed_tensors())
        model._load_state_tensors(tensors, header)
        model._check_loaded(str(path))
        model.fitted = True
        return model.to(device)

    # ------------------------------------------------------------- subclass plumbing
    def _extra_header(self) -> dict[str, Any]:
        return {}

    @abstractmethod
    def _state_tensors(self) -> dict[str, torch.Tensor]:
        """All tensors needed to reproduce predictions."""

    @abstractmethod
    def _expected_tensors(
        self, table: Mapping[str, TensorInfo], header: dict[str, Any], path: str
    ) -> dict[str, TensorInfo]:
        """Names, dtypes and shapes :meth:`_state_tensors` gives for this model's hyperparameters.

        Args:
            table: The checkpoint's tensor table, for sizes that depend on the data (they
                must still be bounded by the hyperparameters and consistent with the header).
            header: The checkpoint header.
            path: The checkpoint file, for messages.

        Raises:
            SurrogateCheckpointError: For data-dependent sizes out of bounds.
        """

    def _fixed_tensors(self) -> dict[str, torch.Tensor]:
        """Tensors whose only valid value holds non-finite entries (exempt from the finiteness check)."""
        return {}

    @abstractmethod
    def _load_state_tensors(self, tensors: dict[str, torch.Tensor], header: dict[str, Any]) -> None:
        """Inverse of :meth:`_state_tensors`."""

    def _check_loaded(self, path: str) -> None:
        """Check the values just loaded from ``path`` beyond finiteness; raise ``SurrogateCheckpointError``."""

    @staticmethod
    def _require_positive(path: str, name: str, tensor: torch.Tensor) -> None:
        """Raise ``SurrogateCheckpointError`` unless every entry of ``tensor`` is > 0."""
        if not bool((tensor > 0).all()):
            raise SurrogateCheckpointError(
                f"Surrogate checkpoint {path!r} tensor {name!r} must be positive everywhere, got a minimum of "
                f"{float(tensor.min())}; re-fit the surrogate and save it again."
            )

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
