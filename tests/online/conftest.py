"""A tiny online-loop setup: a random pixel model of the real classes, a few rows per round."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tiny_components import save_pixel_model  # noqa: E402

from config.online_base import online_config  # noqa: E402
from online_helpers import LOGGING_ORACLE  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> str:
    return save_pixel_model(tmp_path_factory.mktemp("pixel_model") / "model")


def small_config(model_path: str, output_dir: Path, variant: str = "tiny_jpeg", kind: str = "ucb"):
    """The embedded-world config shrunk to seconds: 8×8 images, 2 steps, 2 particles."""
    c = online_config(kind, variant, method="test")
    c.model.path = model_path
    c.model.num_steps = 2
    c.model.guidance_scale = 2.0
    c.output_dir = str(output_dir)
    c.run_name = "run"
    c.progress = False
    c.device = "cpu"
    c.smc.num_particles = 2
    c.smc.prompts_per_call = 3
    c.loop.num_rounds = 3
    c.loop.initial_queries = 6
    c.loop.queries_per_round = 4
    c.evaluate.images_per_prompt = 1
    c.evaluate.num_prompts = 3
    if kind in ("ucb", "greedy", "bootstrap"):
        c.surrogate.kwargs.hidden = (16, 8)
        c.surrogate.kwargs.max_epochs = 20
    return c


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
