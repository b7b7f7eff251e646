"""Versioned deprecations, in the manner of diffusers' ``deprecate``: a warning that names the removal version.

Every old format this package still reads (a checkpoint header from before acquisitions left the
models, the ``"greedy"`` kind) goes through :func:`deprecate`, which emits a ``FutureWarning``
saying what is deprecated, what to do instead and in which version the support goes. Once the
package's own version reaches that removal version, :func:`deprecate` raises instead, so a
forgotten shim fails the tests rather than lingering.
"""

from __future__ import annotations

import warnings
from importlib import metadata

#: The version in which the support for formats from before the acquisition split (0.1.x) is removed.
ACQUISITION_SPLIT_REMOVAL = "0.4.0"
#: The distribution whose version :func:`deprecate` compares with the removal versions.
DISTRIBUTION = "das_toolkit"


def _version_tuple(version: str) -> tuple[int, ...]:
    parts = []
    for part in version.split("+")[0].split("."):
        digits = "".join(ch for ch in part if ch.isdigit())
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


def package_version() -> str:
    """This package's installed version (``"0.0.0"`` when it is not installed, e.g. run from a checkout)."""
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return "0.0.0"


def deprecate(what: str, instead: str, removal: str = ACQUISITION_SPLIT_REMOVAL, stacklevel: int = 3) -> None:
    """Warn that ``what`` is deprecated and will be removed in version ``removal``.

    Args:
        what: The deprecated thing, as the start of a sentence (``"Surrogate kind 'greedy'"``).
        instead: What to do instead (a clause).
        removal: The version that removes the support.
        stacklevel: Passed to :func:`warnings.warn`.

    Raises:
        RuntimeError: When this package's version has reached ``removal`` (the shim must go).
    """
    if _version_tuple(package_version()) >= _version_tuple(removal):
        raise RuntimeError(f"{what} was to be removed in version {removal}; remove its deprecation shim.")
    warnings.warn(
        f"{what} is deprecated and will be removed in version {removal}; {instead}.", FutureWarning, stacklevel
    )


__all__ = ["ACQUISITION_SPLIT_REMOVAL", "deprecate", "package_version"]
