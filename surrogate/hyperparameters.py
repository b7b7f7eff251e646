"""One generic checker for surrogate hyperparameters, used for user configs and for checkpoint headers.

It knows no surrogate kind. A kind's class owns its knowledge and this module reads it:

* the valid names are the keyword arguments of the class's constructor (read with
  :func:`inspect.signature`; the same signature is what the class records, see
  :func:`surrogate.base.records_hyperparameters`), so they cannot drift from the code;
* the bounds of every name are the class's ``hyperparameter_specs`` (a dict of
  :class:`HyperparameterSpec`, built with :func:`integer`, :func:`number`, :func:`choice` and
  :func:`int_list`; a subclass extends its parent's);
* the memory its tensors take is the class's ``implied_elements(values)``, given every value
  (defaults filled in; ``input_dim`` 1, a lower bound, when absent): at most
  :data:`MAX_ELEMENTS` (`2^26`, 64 Mi, i.e. 512 MiB in float64) elements, so an oversized model
  is refused before anything is allocated (the full count is checked again when the surrogate
  is built with its ``input_dim``);
* names the class lists in ``legacy_hyperparameters`` (acquisition settings that older versions
  kept in the model, e.g. ``beta``) are refused with a sentence saying where they went.

Conventions:

* integers must be real integers (``bool`` is refused, and so is an integral float such as
  ``5.0``: a config or header holding a float where an integer belongs is a mistake worth
  naming);
* numbers are ``int`` or ``float`` (not ``bool``) and must be finite;
* ``hidden`` is a non-empty list or tuple of integers;
* ``dtype`` is ``"float32"`` / ``"float64"`` (or the matching ``torch.dtype``).

Every refusal is a :class:`HyperparameterError` (a ``ValueError``) whose message is one
sentence naming the field with the caller's prefix, e.g.
``"surrogate.kwargs.lam must be a finite number > 0, got nan."``.
"""

from __future__ import annotations

import inspect
import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

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


def integer(low: int, high: int, optional: bool = False) -> HyperparameterSpec:
    """An integer in ``[low, high]`` (or None when ``optional``)."""
    return HyperparameterSpec("int", low=low, high=high, optional=optional)


def number(
    low: float, high: float = _INF, *, low_open: bool = False, high_open: bool = False, optional: bool = False
) -> HyperparameterSpec:
    """A finite number between ``low`` and ``high`` (bounds excluded when ``low_open`` / ``high_open``)."""
    return HyperparameterSpec("float", low=low, high=high, low_open=low_open, high_open=high_open, optional=optional)


def choice(values: tuple[Any, ...]) -> HyperparameterSpec:
    """One of ``values``."""
    return HyperparameterSpec("choice", choices=tuple(values))


def int_list(low: int, high: int, max_length: int) -> HyperparameterSpec:
    """A non-empty list of at most ``max_length`` integers in ``[low, high]``."""
    return HyperparameterSpec("int_list", low=low, high=high, max_length=max_length)


def constructor_defaults(cls: type) -> dict[str, Any]:
    """Keyword arguments of ``cls``'s constructor -> default (``inspect.Parameter.empty`` if none).

    The constructor's signature is the list of hyperparameters (:func:`surrogate.base.records_hyperparameters`
    refuses ``**kwargs``).
    """
    return {name: p.default for name, p in inspect.signature(cls).parameters.items()}


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


def _as_dict(values: Any, where: str) -> dict[str, Any]:
    """``values`` as a dict (a mapping, or any object with ``keys()`` and item access such as a ConfigDict)."""
    if isinstance(values, Mapping):
        return dict(values)
    if not (hasattr(values, "keys") and hasattr(values, "__getitem__")):
        raise HyperparameterError(f"{where} must be a mapping of hyperparameter names to values, got {_show(values)}.")
    return {name: values[name] for name in values.keys()}


def _check_names(cls: type, values: Mapping[str, Any], names: tuple[str, ...], where: str) -> None:
    for name in values:
        if name in names:
            continue
        if name in getattr(cls, "legacy_hyperparameters", ()):
            raise HyperparameterError(
                f"{where}.{name} is no longer a hyperparameter of the {cls.kind!r} surrogate: it is an acquisition "
                f"setting now (the run config's acquisition section, or surrogate.acquisition in code)."
            )
        raise HyperparameterError(
            f"{where}.{name} is not a hyperparameter of the {cls.kind!r} surrogate; valid names: {sorted(names)}."
        )


def check_class_hyperparameters(cls: type, values: Any, *, where: str = "surrogate") -> None:
    """Validate the constructor keyword arguments of the surrogate class ``cls``, before anything is built.

    ``values`` may omit any argument (the constructor's default then applies), including
    ``input_dim`` and ``dtype``, which configs leave out and checkpoint headers record.

    Args:
        cls: A surrogate class (its constructor, ``hyperparameter_specs``, ``implied_elements``).
        values: Name -> value, as given to the constructor (a mapping, or any object with
            ``keys()`` and item access, such as an ``ml_collections.ConfigDict``).
        where: Prefix naming the values in messages, e.g. ``"surrogate.kwargs"`` for a config.

    Raises:
        HyperparameterError: One sentence naming the first problem: an unknown name (listing
            the valid ones), a value of the wrong type, non-finite or out of bounds, or more
            than :data:`MAX_ELEMENTS` implied tensor elements.
        RuntimeError: For a constructor argument without a spec (a bug in the kind).
    """
    defaults = constructor_defaults(cls)
    values = _as_dict(values, where)
    _check_names(cls, values, tuple(defaults), where)
    specs = cls.hyperparameter_specs
    for name, value in values.items():
        if name not in specs:  # a constructor argument added without bounds: a bug in the kind
            raise RuntimeError(f"Hyperparameter {name!r} of {cls.kind!r} has no entry in hyperparameter_specs.")
        if not _valid(value, specs[name]):
            raise HyperparameterError(f"{where}.{name} must be {_describe(specs[name])}, got {_show(value)}.")
    full = {**defaults, "input_dim": 1, **values}
    field, elements, context = cls.implied_elements(full)
    if elements > MAX_ELEMENTS:
        raise HyperparameterError(
            f"{where}.{field} implies {elements:,} tensor elements for {context}, over the cap of "
            f"{MAX_ELEMENTS:,} (surrogate.hyperparameters.MAX_ELEMENTS); choose smaller sizes."
        )


__all__ = [
    "MAX_ELEMENTS",
    "HyperparameterError",
    "HyperparameterSpec",
    "check_class_hyperparameters",
    "choice",
    "constructor_defaults",
    "int_list",
    "integer",
    "number",
]
