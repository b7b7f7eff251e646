"""The rating page's optional packages (the ``[human]`` extra): which, and whether they are installed."""

from __future__ import annotations

import importlib.util

EXTRA_MODULES = ("starlette", "uvicorn")
MISSING_EXTRA = (
    'oracle.kind="human" needs the optional packages starlette and uvicorn; install them with '
    'pip install "das-toolkit[human]".'
)


def human_extra_installed() -> bool:
    """Whether the packages the rating page needs are importable (imports nothing)."""
    return all(importlib.util.find_spec(name) is not None for name in EXTRA_MODULES)
