"""The test suite; it mirrors the packages (``tests/das``, ``tests/world``, ``tests/surrogate``, ``tests/online``)."""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
