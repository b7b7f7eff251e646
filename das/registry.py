"""Names -> objects, and the one-line error for a name or value that is not valid.

A :class:`Registry` maps the names a setting may hold (a model family, a tempering schedule,
a resampler) to what they build, and refuses any other name with one sentence listing the
valid ones (:class:`ConfigError`). The library's own tables (resamplers, schedules,
selections) live with their code; the application layer (:mod:`dasapp.factory`,
:mod:`online.builders`) builds its registries on this class.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


class ConfigError(ValueError):
    """A setting the user can fix (an unknown name, a value out of range); the message says how."""


def check_choice(value, valid, field: str) -> None:
    """Raises :class:`ConfigError` ("Unknown <field> ...; choose one of: ...") unless `value` is in `valid`."""
    if value not in valid:
        shown = ", ".join(repr(v) if v == "" else str(v) for v in valid)
        raise ConfigError(f"Unknown {field} {value!r}; choose one of: {shown}.")


def load_object(target: str):
    """``"module:Name"`` -> the object, imported now (heavy modules load only when a builder runs)."""
    module, name = target.split(":")
    return getattr(importlib.import_module(module), name)


class Registry:
    """Names → builders of one kind of object, and the check of the config field naming one.

    Args:
        field: the config field, as messages name it (``"model.family"``).
        source: ``"module:ATTRIBUTE"`` of a table (a dict of name → object, or a tuple of
            names) another module owns; it is read at each use, never copied.
        sort: whether messages list the names sorted (else in registration order).
    """

    def __init__(self, field: str, source: str | None = None, sort: bool = False):
        self.field = field
        self._source = source
        self._sort = sort
        self._entries: dict[str, Callable[..., Any]] = {}

    def register(self, *names: str) -> Callable:
        """Decorator: registers the builder under every one of `names`."""

        def add(builder: Callable) -> Callable:
            for name in names:
                self._entries[name] = builder
            return builder

        return add

    @property
    def entries(self):
        return self._entries if self._source is None else load_object(self._source)

    def names(self) -> tuple[str, ...]:
        names = tuple(self.entries)
        return tuple(sorted(names)) if self._sort else names

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self.entries

    def check(self, name: object) -> None:
        """Raises :class:`ConfigError` ("Unknown <field> ...; choose one of: ...") for an unknown name."""
        check_choice(name, self.names(), self.field)

    def get(self, name: str):
        """The entry registered as `name` (after :meth:`check`)."""
        self.check(name)
        return self.entries[name]

    def build(self, name: str, *args, **kwargs):
        """Calls the builder registered as `name`."""
        return self.get(name)(*args, **kwargs)


__all__ = ["ConfigError", "Registry", "check_choice", "load_object"]
