"""A tiny online-loop setup: a random pixel model of the real classes, a few rows per round."""

import sys

import pytest

from tests.online.online_helpers import LOGGING_ORACLE, small_config
from tests.tiny_components import save_pixel_model


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> str:
    return save_pixel_model(tmp_path_factory.mktemp("pixel_model") / "model")


@pytest.fixture
def make_config(tiny_model, tmp_path):
    """``make_config(variant="tiny_jpeg", kind="ucb")`` with outputs under this test's tmp_path."""

    def build(variant: str = "tiny_jpeg", kind: str = "ucb"):
        return small_config(tiny_model, tmp_path / "runs", variant, kind)

    return build


@pytest.fixture
def accelerator():
    from accelerate import Accelerator

    return Accelerator(cpu=True)


@pytest.fixture
def logging_oracle(tmp_path):
    """An external oracle that writes one line per item it is asked about: ``(command, log)``."""
    script = tmp_path / "oracle.py"
    script.write_text(LOGGING_ORACLE)
    log = tmp_path / "asked.log"
    return (sys.executable, str(script), str(log)), log
