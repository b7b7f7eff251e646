"""The surrogate interface and the small helpers every surrogate shares.

A surrogate maps feature vectors `(N, D)` to a posterior (:class:`surrogate.posterior.Posterior`):
a mean and standard deviation `(N,)`, and, by kind, posterior draws and per-head predictions.
Every output is a differentiable function of the features (the sampler takes their gradient),
computed in one batched pass on the device the model lives on. How optimistic to be is not the
model's business: acquisitions (:mod:`surrogate.acquisition`) turn any posterior into scores.
"""

from __future__ import annotations

import functools
import inspect
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
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
from surrogate.deprecation import deprecate
from surrogate.hyperparameters import (
    HyperparameterError,
    HyperparameterSpec,
    check_class_hyperparameters,
    choice,
    integer,
)
from surrogate.posterior import Posterior

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


# ------------------------------------------------------------------- hyperparameter record
#: How a constructor argument is recorded in JSON, by its annotation (``X | None`` also records None).
_RECORDERS: dict[str, Callable[[Any], Any]] = {
    "int": int,
    "float": float,
    "str": str,
    "Sequence[int]": lambda value: [int(h) for h in value],
    "str | torch.dtype": lambda value: dtype_name(dtype_from_name(value)),
}


def _recorder(name: str, annotation: Any) -> Callable[[Any], Any]:
    """The JSON recorder of a constructor argument annotated ``annotation`` (a string under PEP 563)."""
    text = str(annotation)
    base = text.removesuffix(" | None")
    if base not in _RECORDERS:
        raise TypeError(
            f"Hyperparameter {name!r} is annotated {text!r}, which has no recorder; valid: {list(_RECORDERS)}."
        )
    record = _RECORDERS[base]
    if base == text:
        return record
    return lambda value: None if value is None else record(value)


def records_hyperparameters(init: Callable[..., None]) -> Callable[..., None]:
    """Decorate a surrogate constructor so that its arguments become the recorded hyperparameters.

    In the spirit of diffusers' ``register_to_config``: the constructor's signature is the list of
    hyperparameters (every argument is annotated and keyword-passable; no ``**kwargs``). Each call
    runs the constructor, then records every argument, defaults included, as JSON (``int``,
    ``float``, ``str``, a list of ints for ``hidden``, the dtype's name) in ``self._hparams``.
    :attr:`Surrogate.hyperparameters`, the checkpoint header and ``cls(**hyperparameters)`` on load
    all read that one record.
    """
    signature = inspect.signature(init)
    parameters = list(signature.parameters.values())[1:]  # drop self
    if any(p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL) for p in parameters):
        raise TypeError(f"{init.__qualname__} takes *args/**kwargs; list every hyperparameter in its signature.")
    recorders = {p.name: _recorder(p.name, p.annotation) for p in parameters}

    @functools.wraps(init)
    def construct(self, *args: Any, **kwargs: Any) -> None:
        bound = signature.bind(self, *args, **kwargs)
        init(*bound.args, **bound.kwargs)
        bound.apply_defaults()
        self._hparams = {name: record(bound.arguments[name]) for name, record in recorders.items()}

    return construct


# ------------------------------------------------------------------------------ the base
class Surrogate(ABC):
    """Reward model with uncertainty: `(N, D)` features -> a posterior (mean, std, draws).

    The base class owns what every kind shares: the hyperparameter record (constructors are
    decorated with :func:`records_hyperparameters`), the fit bookkeeping (:meth:`fit`: seeding,
    data checks, warm-start decision, ``n_data``, ``round``, ``fitted`` and ``fit_info``), and
    the checkpoint state (:meth:`save`, :meth:`load`, moving between devices, and the
    standardizers and scalar tensors the class declares in ``_standardizers`` / ``_scalars``).

    A kind is one class that owns its knowledge: it sets ``kind``, its ``hyperparameter_specs``
    (extending its parent's), its ``capabilities``, its memory count :meth:`implied_elements`,
    and implements :meth:`_fit`, :meth:`posterior`, :meth:`_model_tensors`,
    :meth:`_expected_model_tensors` and :meth:`_load_model_tensors`; registering it in
    :data:`surrogate.SURROGATES` is the one other edit. A surrogate is rebuilt on load as
    ``cls(**header["hyperparameters"])`` once they have passed
    :func:`surrogate.hyperparameters.check_class_hyperparameters`.

    Args:
        input_dim: Feature dimension `D`.
        dtype: ``"float32"`` or ``"float64"`` (parameters and outputs).
    """

    kind: ClassVar[str] = "abstract"
    #: Bounds of every constructor argument (a kind extends its parent's dict).
    hyperparameter_specs: ClassVar[dict[str, HyperparameterSpec]] = {
        "input_dim": integer(1, 2**20),
        "dtype": choice(tuple(_DTYPES)),
    }
    #: What the posterior offers beyond mean and std: ``"sample"`` (:meth:`Posterior.sample`, Thompson
    #: sampling) and ``"heads"`` (:attr:`Posterior.heads`, an ensemble's max over heads).
    capabilities: ClassVar[frozenset[str]] = frozenset()
    #: Constructor arguments of versions before 0.2 that were acquisition settings (``beta``...):
    #: dropped from old checkpoint headers with a deprecation warning, refused in new configs.
    legacy_hyperparameters: ClassVar[tuple[str, ...]] = ()
    #: Kind names of versions before 0.2 that this class now loads, each with the acquisition settings
    #: it meant (``"greedy"``: the UCB model's posterior mean).
    deprecated_kinds: ClassVar[dict[str, dict[str, Any]]] = {}
    #: The fewest rows a fit of this kind needs (the online loop refuses fewer initial queries at
    #: validation). Two for every kind so far: one row gives the rewards no spread to standardize by
    #: (and the GP's PCA fails on it); a kind that needs more overrides this.
    min_fit_rows: ClassVar[int] = 2
    #: :class:`Standardizer` attributes; saved as ``<name>.mean`` / ``<name>.std``, std > 0 on load.
    _standardizers: ClassVar[tuple[str, ...]] = ()
    #: Checkpoint name -> float attribute; saved as a float64 `(1,)` tensor, > 0 on load.
    _scalars: ClassVar[dict[str, str]] = {}
    #: Attributes (modules, tensors, objects with ``to``) moved by :meth:`to`; ``None`` ones are skipped.
    _movable: ClassVar[tuple[str, ...]] = ()

    def __init__(self, input_dim: int, dtype: str | torch.dtype = "float32") -> None:
        self.input_dim = int(input_dim)
        self.dtype = dtype_from_name(dtype)
        self.device = torch.device("cpu")
        self.n_data = 0
        self.round = 0
        self.fitted = False
        self.fit_info: dict[str, Any] = {}

    # ----------------------------------------------------------------------------- API
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
        """Fit on features `(N, D)` and rewards `(N,)`; returns ``fit_info`` (the kind's fit statistics).

        Args:
            features: `(N, D)`, finite.
            rewards: `(N,)`, finite.
            generator: CPU generator for every random choice of the fit (see the kind's :meth:`_fit`).
            seed: Seeds a fresh generator when ``generator`` is None (0 if both are None).
            round: Outer-loop round stored in the checkpoint header.
            warm_start: Start from the current state (once fitted) instead of a fresh one;
                ``fit_info["warm_start"]`` says whether it did.

        Raises:
            ValueError: For features that are not `(N, input_dim)`, a reward count that differs,
                or non-finite values.
        """
        g = make_generator(generator, seed)
        x, y = self._prepare_data(features, rewards)
        warm = bool(warm_start and self.fitted)
        info = self._fit(x, y, g, warm)
        self.n_data = int(x.shape[0])
        if round is not None:
            self.round = int(round)
        self.fitted = True
        self.fit_info = {**info, "warm_start": warm}
        return self.fit_info

    @abstractmethod
    def _fit(self, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator, warm: bool) -> dict[str, Any]:
        """Fit on checked data `x (N, D)`, `y (N,)` in the model dtype; return the fit statistics."""

    @abstractmethod
    def posterior(self, features: torch.Tensor, *, observation_noise: bool = False) -> Posterior:
        """Return the posterior at features `(..., D)`: mean and std of shape `(...)` (it unpacks as them).

        With ``observation_noise=True`` the std is the predictive std of a new noisy
        observation (epistemic + noise); otherwise the epistemic std of the mean. Draws
        (:meth:`Posterior.sample`) and heads are there when the kind's ``capabilities`` say so.
        """

    def mean(self, features: torch.Tensor) -> torch.Tensor:
        """Posterior mean `(...)` (the evaluation / greedy score)."""
        return self.posterior(features)[0]

    @classmethod
    def implied_elements(cls, values: Mapping[str, Any]) -> tuple[str, int, str]:
        """Tensor elements a model with these hyperparameters allocates: `(field, count, what it was computed for)`.

        Args:
            values: Every constructor argument (defaults filled in; ``input_dim`` 1 when unknown).

        Returns:
            The field to name when the count is over the cap, the count, and a clause for the message.
        """
        return "", 0, ""

    @classmethod
    def legacy_acquisition(cls, hyperparameters: Mapping[str, Any]) -> dict[str, Any]:
        """The acquisition settings (``kind``, ``beta``, ``clip``) the optimistic score of a pre-0.2 model
        with these hyperparameters meant (they held ``legacy_hyperparameters``)."""
        raise NotImplementedError(f"The {cls.kind!r} surrogate has no pre-0.2 format.")

    @classmethod
    def upgrade_header(cls, header: dict[str, Any], path: str | os.PathLike) -> dict[str, Any]:
        """A checkpoint header of this class in the current format (a deprecation warning when it was not).

        A pre-0.2 header (a kind in ``deprecated_kinds``, or hyperparameters holding
        ``legacy_hyperparameters``) gets this class's kind and loses those hyperparameters;
        the acquisition settings they meant are kept under ``"legacy_acquisition"``. Any other
        header is returned as it is (a foreign kind is refused later by ``check_header``).
        """
        kind, hparams = header["kind"], header["hyperparameters"]
        legacy = sorted(name for name in cls.legacy_hyperparameters if name in hparams)
        if kind not in cls.deprecated_kinds and not (kind == cls.kind and legacy):
            return header
        old = f"kind {kind!r}" + (f" with {', '.join(legacy)} among its hyperparameters" if legacy else "")
        deprecate(
            f"Surrogate checkpoint {str(path)!r} is of the pre-0.2 format ({old}), which",
            f"it loads as a {cls.kind!r} surrogate; choose the acquisition in the run config (acquisition.*) "
            "and re-save the checkpoint",
        )
        if kind in cls.deprecated_kinds:
            acquisition = dict(cls.deprecated_kinds[kind])
        else:
            acquisition = cls.legacy_acquisition(hparams)
        kept = {name: value for name, value in hparams.items() if name not in cls.legacy_hyperparameters}
        return {**header, "kind": cls.kind, "hyperparameters": kept, "legacy_acquisition": acquisition}

    @property
    def hyperparameters(self) -> dict[str, Any]:
        """The constructor keyword arguments, as recorded at construction (JSON-serializable)."""
        if not hasattr(self, "_hparams"):
            raise TypeError(f"{type(self).__name__}.__init__ must be decorated with @records_hyperparameters.")
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
        header = cls.upgrade_header(read_header(path), path)
        check_header(header, path, cls.kind, expected_input_dim)
        return cls._load_untrusted(path, header, device)

    @classmethod
    def _load_untrusted(cls, path: str | os.PathLike, header: dict[str, Any], device: torch.device | str) -> Surrogate:
        """Rebuild a surrogate from a checkpoint whose header has passed :func:`read_header`.

        Order: (1) the header's hyperparameters pass ``check_class_hyperparameters`` (bounded
        sizes, so constructing cannot exhaust memory) and agree with its ``input_dim``; (2)
        the model is constructed; (3) the file's tensor table (names, dtypes, shapes) is
        compared with what the model expects, before any tensor is read; (4) the tensors are
        loaded and every floating one must be finite; (5) the values are checked (positive
        scales, then the kind's own checks: a valid Cholesky factor...). Nothing in the file
        is executed.
        """
        model = cls._construct_from_header(path, header)
        model.n_data = int(header["n_data"])
        model.round = int(header["round"])
        expected = model._expected_tensors(read_tensor_table(path), header, str(path))
        tensors = load_tensors(path, expected, fixed=model._fixed_tensors())
        model._load_state_tensors(tensors, header)
        model._check_state(str(path))
        model.fitted = True
        return model.to(device)

    @classmethod
    def _construct_from_header(cls, path: str | os.PathLike, header: dict[str, Any]) -> Surrogate:
        """Steps (1) and (2) of :meth:`_load_untrusted`: check the header's hyperparameters, then build."""
        where = f"Surrogate checkpoint {str(path)!r} hyperparameters"
        hparams = header["hyperparameters"]
        try:
            check_class_hyperparameters(cls, hparams, where=where)
        except HyperparameterError as error:
            raise SurrogateCheckpointError(str(error)) from None
        if hparams.get("input_dim") != header["input_dim"]:
            raise SurrogateCheckpointError(
                f"{where}.input_dim is {hparams.get('input_dim')!r} but the header's input_dim is "
                f"{header['input_dim']!r}; re-save the checkpoint."
            )
        try:
            return cls(**hparams)
        except (TypeError, ValueError) as error:  # a bound the table misses; never expected
            raise SurrogateCheckpointError(f"{where} are refused by {cls.__name__} ({error}).") from None

    # ------------------------------------------------------------- checkpoint state
    def _extra_header(self) -> dict[str, Any]:
        return {"fit_info": self.fit_info}

    def _state_tensors(self) -> dict[str, torch.Tensor]:
        """All tensors needed to reproduce predictions: the kind's, its standardizers' and its scalars."""
        tensors = self._model_tensors()
        for name in self._standardizers:
            tensors.update(getattr(self, name).state(name))
        for key, attr in self._scalars.items():
            tensors[key] = torch.tensor([getattr(self, attr)], dtype=torch.float64)
        return tensors

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
        expected = self._expected_model_tensors(table, header, path)
        for name in self._standardizers:
            expected.update(getattr(self, name).expected_state(name))
        expected.update({key: tensor_info(torch.float64, (1,)) for key in self._scalars})
        return expected

    def _load_state_tensors(self, tensors: dict[str, torch.Tensor], header: dict[str, Any]) -> None:
        """Inverse of :meth:`_state_tensors`; also restores ``fit_info`` from the header."""
        for name in self._standardizers:
            getattr(self, name).load_state(tensors, name)
        for key, attr in self._scalars.items():
            setattr(self, attr, float(tensors[key][0]))
        self._load_model_tensors(tensors, header)
        self.fit_info = dict(header.get("extra", {}).get("fit_info", {}))

    def _check_state(self, path: str) -> None:
        """Check loaded values: positive standardizer scales and scalars, then :meth:`_check_loaded`."""
        for name in self._standardizers:
            self._require_positive(path, f"{name}.std", getattr(self, name).std)
        for key, attr in self._scalars.items():
            self._require_positive(path, key, torch.tensor([getattr(self, attr)]))
        self._check_loaded(path)

    def _move(self, device: torch.device) -> None:
        """Move the standardizers and the ``_movable`` attributes to ``device``."""
        self.device = torch.device(device)
        for name in (*self._standardizers, *self._movable):
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, value.to(device))

    # ------------------------------------------------------------------- kind hooks
    @abstractmethod
    def _model_tensors(self) -> dict[str, torch.Tensor]:
        """The kind's own tensors (beyond its standardizers and ``_scalars``)."""

    @abstractmethod
    def _expected_model_tensors(
        self, table: Mapping[str, TensorInfo], header: dict[str, Any], path: str
    ) -> dict[str, TensorInfo]:
        """Names, dtypes and shapes of :meth:`_model_tensors` (arguments as :meth:`_expected_tensors`)."""

    @abstractmethod
    def _load_model_tensors(self, tensors: dict[str, torch.Tensor], header: dict[str, Any]) -> None:
        """Inverse of :meth:`_model_tensors`."""

    def _fixed_tensors(self) -> dict[str, torch.Tensor]:
        """Tensors whose only valid value holds non-finite entries (exempt from the finiteness check)."""
        return {}

    def _check_loaded(self, path: str) -> None:  # noqa: B027 (optional hook)
        """Check the kind's loaded values beyond finiteness; raise ``SurrogateCheckpointError``."""

    @staticmethod
    def _require_positive(path: str, name: str, tensor: torch.Tensor) -> None:
        """Raise ``SurrogateCheckpointError`` unless every entry of ``tensor`` is > 0."""
        if not bool((tensor > 0).all()):
            raise SurrogateCheckpointError(
                f"Surrogate checkpoint {path!r} tensor {name!r} must be positive everywhere, got a minimum of "
                f"{float(tensor.min())}; re-fit the surrogate and save it again."
            )

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
