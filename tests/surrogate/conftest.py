"""Session fixtures for the surrogate tests."""

from __future__ import annotations

import pytest

from surrogate import make_surrogate
from tests.surrogate.surrogate_helpers import small_kwargs, toy_data


@pytest.fixture(scope="session")
def fitted():
    """One fitted float32 surrogate per kind (fitted once per session)."""
    x, y = toy_data()
    models = {}
    for kind in ("ucb", "bootstrap", "gp"):
        model = make_surrogate(kind, **small_kwargs(kind))
        model.fit(x, y, seed=1, round=3)
        models[kind] = model
    return models
