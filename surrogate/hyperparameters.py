"""One checker for surrogate hyperparameters, used for user configs and for checkpoint headers.

The valid names of a kind are the keyword arguments of its class's constructor (read with
:func:`inspect.signature`; the same signature is what the class records, see
:func:`surrogate.base.records_hyperparameters`), so they cannot drift from the code; a
setting's ``fixed_hyperparameters`` (greedy's ``beta = 0``) admit only their value; the bounds
of every name live in one table, :data:`HYPERPARAMETER_SPECS` (whose allowed sets are the
classes' own ``BONUS_COVARIANCES``, ``OPTIMISM_MODES`` and dtypes).

Conventions:

* integers must be real integers (``bool`` is refused, and so is an integral float such as
  ``5.0``: a config or header holding a float where an integer belongs is a mistake worth
  naming);
* numbers are ``int`` or ``float`` (not ``bool``) and must be finite;
* ``hidden`` is a non-empty list or tuple of integers;
* ``dtype`` is ``"float32"`` / ``"float64"`` (or the matching ``torch.dtype``).

Beyond each value's own bounds, the memory a constructor allocates is capped: the tensors
implied by the hyperparameters may hold at most :data:`MAX_ELEMENTS` (`2^26`, 64 Mi, i.e.
512 MiB in float64) elements. For the MLP kinds that is the parameter count of the
`input_dim -> hidden... -> 1` network times ``num_heads``, plus the two `H x H` matrices of
the UCB bonus (`H = hidden[-1]`); for the GP it is the `k x D` PCA components plus the larger
of what its methods may allocate: the exact GP's `N x N` kernel matrix and `N x k` training
inputs for `N = max_points` (methods ``"auto"`` and ``"exact"``, and the sparse GP's
hyperparameter fit with ``objective="mll_subset"``), and the sparse GP's three `m x m`
matrices (`q(u)` factor, `K_uu` and its factor), `m x k` inducing inputs and `batch_size x m`
cross-covariance for `m = inducing_points` (``"auto"`` and ``"sparse"``; its memory does not
grow with the data beyond the data itself). Without ``input_dim``
(configs do not give it) the count uses ``input_dim = 1``, a lower bound; the full count is
checked again when the surrogate is built with its ``input_dim`` (:func:`surrogate.make_surrogate`).

Every refusal is a :class:`HyperparameterError` (a ``ValueError``) whose message is one
sentence naming the field with the caller's prefix, e.g.
``"surrogate.kwargs.beta must be a finite number >= 0, got nan."``.
"""

from __future__ import annotations

import inspect
import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from surrogate.base import _DTYPES, fixed_value_message, is_fixed_value
from surrogate.bootstrap import OPTIMISM_MODES
from surrogate.gp import GP_METHODS, GP_OBJECTIVES
from surrogate.ucb import BONUS_COVARIANCES

#: Cap on the number of tensor elements a surrogate's hyperparameters may imply (2^26).
MAX_ELEMENTS = 2**26

_INF = math.inf


class HyperparameterError(ValueError):
    """A surrogate hyperparameter is unknown, of the wrong type, or out of bounds."""


@dataclass(frozen=True)
class HyperparameterSpec:
    """Type and bounds of one hyperparameter.

    Attributes:
        type: ``"int"``, ``"float"``, ``"choice"`` or ``"int_list"``.
        low: Lower bound (``"int"``, ``"float"``, and each entry of ``"int_list"``).
        high: Upper bound (inclusive unless ``high_open``); ``inf`` for none.
        low_open: The lower bound is excluded (``> low`` instead of ``>= low``).
        high_open: The upper bound is excluded.
        optional: ``None`` is also accepted.
        choices: The allowed values of a ``"choice"``.
        max_length: Maximum length of an ``"int_list"``.
    """

    type: str
    low: float = -_INF
    high: float = _INF
    low_open: bool = False
    high_open: bool = False
    optional: bool = False
    choices: tuple[Any, ...] = ()
    max_length: int = 0


def _int(low: int, high: int, optional: bool = False) -> HyperparameterSpec:
    return HyperparameterSpec("int", low=low, high=high, optional=optional)


def _float(
    low: float, high: float = _INF, *, low_open: bool = False, high_open: bool = False, optional: bool = False
) -> HyperparameterSpec:
    return HyperparameterSpec("float", low=low, high=high, low_open=low_open, high_open=high_open, optional=optional)


#: Bounds of every constructor keyword argument of every kind (the single table).
HYPERPARAMETER_SPECS: dict[str, HyperparameterSpec] = {
    "input_dim": _int(1, 2**20),
    "dtype": HyperparameterSpec("choice", choices=tuple(_DTYPES)),
    # MLP kinds (ucb, greedy, bootstrap)
    "hidden": HyperparameterSpec("int_list", low=1, high=16384, max_length=64),
    "num_heads": _int(2, 256),
    "dropout": _float(0.0, 1.0, high_open=True),
    "beta": _float(0.0),
    "lam": _float(0.0, low_open=True),
    "bonus_covariance": HyperparameterSpec("choice", choices=tuple(BONUS_COVARIANCES)),
    "clip": _float(0.0, low_open=True, optional=True),
    "optimism": HyperparameterSpec("choice", choices=tuple(OPTIMISM_MODES)),
    "lr": _float(0.0, low_open=True),
    "weight_decay": _float(0.0),
    "batch_size": _int(1, 2**16),
    "max_epochs": _int(1, 100_000),
    "patience": _int(1, 100_000),
    "val_fraction": _float(0.0, 0.9),  # above 0.9 a 10-point split can leave no training row
    "label_noise_std": _float(0.0, optional=True),  # known label-noise std (None: unknown), reward units; also GP
    # GP
    "pca_dim": _int(1, 4096, optional=True),
    "max_points": _int(1, 8192),  # the exact GP's size (method "auto": the exact/sparse switch)
    "max_iter": _int(1, 100_000),
    "method": HyperparameterSpec("choice", choices=tuple(GP_METHODS)),
    "inducing_points": _int(1, 4096),
    "epochs": _int(0, 100_000),
    "objective": HyperparameterSpec("choice", choices=tuple(GP_OBJECTIVES)),
}


def _surrogate_class(kind: str, where: str) -> type:
    from surrogate import SURROGATES  # the registry imports this module, so look it up at call time

    if kind not in SURROGATES:
        raise HyperparameterError(f"Unknown surrogate kind {kind!r} for {where}; valid kinds: {sorted(SURROGATES)}.")
    return SURROGATES[kind]


def _constructor_parameters(cls: type) -> dict[str, Any]:
    """Keyword arguments of ``cls``'s constructor -> default (``inspect.Parameter.empty`` if none).

    The constructor's signature is the list of hyperparameters (:func:`surrogate.base.records_hyperparameters`
    refuses ``**kwargs``); a setting's ``fixed_hyperparameters`` replace their defaults.
    """
    found = {name: p.default for name, p in inspect.signature(cls).parameters.items()}
    return {**found, **{name: value for name, value in cls.fixed_hyperparameters.items() if name in found}}


def hyperparameter_names(kind: str) -> tuple[str, ...]:
    """The valid hyperparameter names of a surrogate kind (its constructor's keyword arguments).

    Args:
        kind: A registered surrogate kind (``"ucb"``, ``"greedy"``, ``"bootstrap"``, ``"gp"``).

    Raises:
        HyperparameterError: For an unknown kind.
    """
    return tuple(_constructor_parameters(_surrogate_class(kind, "surrogate")))


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _finite(value: numbers.Real) -> bool:
    try:
        return math.isfinite(value)
    except OverflowError:  # an int too large for a float
        return False


def _fmt(bound: float) -> str:
    return str(int(bound)) if float(bound).is_integer() and abs(bound) < 2**53 else repr(bound)


def _range_text(spec: HyperparameterSpec) -> str:
    if spec.high == _INF:
        return f"{'>' if spec.low_open else '>='} {_fmt(spec.low)}"
    return f"in {'(' if spec.low_open else '['}{_fmt(spec.low)}, {_fmt(spec.high)}{')' if spec.high_open else ']'}"


def _describe(spec: HyperparameterSpec) -> str:
    if spec.type == "int":
        text = f"an integer {_range_text(spec)}"
    elif spec.type == "float":
        text = f"a finite number {_range_text(spec)}"
    elif spec.type == "choice":
        text = f"one of {list(spec.choices)}"
    else:
        text = f"a non-empty list of at most {spec.max_length} integers {_range_text(spec)}"
    return f"None or {text}" if spec.optional else text


def _in_range(value: float, spec: HyperparameterSpec) -> bool:
    above = value > spec.low if spec.low_open else value >= spec.low
    below = value < spec.high if spec.high_open else value <= spec.high
    return above and below


def _valid(value: Any, spec: HyperparameterSpec) -> bool:
    if value is None:
        return spec.optional
    if spec.type == "int":
        return _is_int(value) and _in_range(value, spec)
    if spec.type == "float":
        return _is_number(value) and _finite(value) and _in_range(value, spec)
    if spec.type == "choice":
        if isinstance(value, torch.dtype):  # dtype may also be given as a torch dtype
            return str(value).removeprefix("torch.") in spec.choices
        return isinstance(value, str) and value in spec.choices
    return (
        isinstance(value, (list, tuple))
        and 1 <= len(value) <= spec.max_length
        and all(_is_int(h) and _in_range(h, spec) for h in value)
    )


def _implied_elements(kind: str, values: Mapping[str, Any], defaults: Mapping[str, Any]) -> tuple[str, int, str]:
    """Tensor elements the hyperparameters imply: `(field, count, what it was computed for)`.

    See the module docstring; ``input_dim`` defaults to 1 (a lower bound) when absent.
    """

    def get(name: str) -> Any:
        return values[name] if name in values else defaults[name]

    input_dim = int(values.get("input_dim", 1))
    if "hidden" in defaults:
        sizes = [input_dim, *[int(h) for h in get("hidden")], 1]
        heads = int(get("num_heads")) if "num_heads" in defaults else 1
        count = heads * sum((fan_in + 1) * fan_out for fan_in, fan_out in zip(sizes[:-1], sizes[1:]))
        count += 2 * sizes[-2] ** 2 if kind in ("ucb", "greedy") else 0  # the bonus's Gram matrix and factor
        return "hidden", count, f"input_dim={input_dim} and {heads} head(s)"
    if "max_points" in defaults:
        points, pca_dim, method = int(get("max_points")), get("pca_dim"), get("method")
        k = input_dim if pca_dim is None else min(int(pca_dim), input_dim)
        exact = points * points + points * k  # kernel matrix, training inputs
        inducing, batch = int(get("inducing_points")), int(get("batch_size"))
        sparse = 3 * inducing * inducing + inducing * k + batch * inducing  # q(u) factor, K_uu and factor, Z, K_uf
        exact_used = method != "sparse" or get("objective") == "mll_subset"  # the sparse GP's subset fit is exact
        exact, sparse = (exact if exact_used else 0), (sparse if method != "exact" else 0)
        field, count = ("max_points", exact) if exact >= sparse else ("inducing_points", sparse)  # one at a time
        count += k * input_dim  # the PCA components
        return field, count, f"input_dim={input_dim}, pca_dim={pca_dim} and method={method!r}"
    return "", 0, ""


def check_hyperparameters(kind: str, values: Mapping[str, Any], *, where: str = "surrogate") -> None:
    """Validate the constructor keyword arguments of a surrogate kind, before anything is built.

    ``values`` may omit any argument (the constructor's default then applies), including
    ``input_dim`` and ``dtype``, which configs leave out and checkpoint headers record.

    Args:
        kind: Surrogate kind (``"ucb"``, ``"greedy"``, ``"bootstrap"``, ``"gp"``).
        values: Name -> value, as given to the constructor (a mapping, or any object with
            ``keys()`` and item access, such as an ``ml_collections.ConfigDict``).
        where: Prefix naming the values in messages, e.g. ``"surrogate.kwargs"`` for a config.

    Raises:
        HyperparameterError: One sentence naming the first problem: an unknown kind or
            name (listing the valid ones), a value of the wrong type, non-finite or out of
            bounds, a value other than the one a setting fixes (a nonzero ``beta`` for
            ``"greedy"``), or more than :data:`MAX_ELEMENTS` implied tensor elements.
    """
    cls = _surrogate_class(kind, where)
    defaults = _constructor_parameters(cls)
    names = tuple(defaults)
    if not isinstance(values, Mapping):
        if not (hasattr(values, "keys") and hasattr(values, "__getitem__")):  # e.g. an ml_collections ConfigDict
            raise HyperparameterError(
                f"{where} must be a mapping of hyperparameter names to values, got {_show(values)}."
            )
        values = {name: values[name] for name in values.keys()}
    for name in values:
        if name not in names:
            raise HyperparameterError(
                f"{where}.{name} is not a hyperparameter of the {kind!r} surrogate; valid names: {sorted(names)}."
            )
    for name, value in values.items():
        spec = HYPERPARAMETER_SPECS.get(name)
        if spec is None:  # a constructor argument added without bounds: a bug in this package
            raise RuntimeError(
                f"Hyperparameter {name!r} of {kind!r} has no entry in HYPERPARAMETER_SPECS; add its bounds."
            )
        if name in cls.fixed_hyperparameters:
            fixed = cls.fixed_hyperparameters[name]
            if not is_fixed_value(value, fixed):
                raise HyperparameterError(fixed_value_message(where, name, kind, fixed, cls.fixed_reason, value))
        elif not _valid(value, spec):
            raise HyperparameterError(f"{where}.{name} must be {_describe(spec)}, got {_show(value)}.")
    field, elements, context = _implied_elements(kind, values, defaults)
    if elements > MAX_ELEMENTS:
        raise HyperparameterError(
            f"{where}.{field} implies {elements:,} tensor elements for {context}, over the cap of "
            f"{MAX_ELEMENTS:,} (surrogate.hyperparameters.MAX_ELEMENTS); choose smaller sizes."
        )


__all__ = [
    "HYPERPARAMETER_SPECS",
    "MAX_ELEMENTS",
    "HyperparameterError",
    "HyperparameterSpec",
    "check_hyperparameters",
    "hyperparameter_names",
]
