"""Helpers the online tests share (a module, not conftest, so that tests import them by name)."""

from pathlib import Path

from config.online_base import NO_POOL, online_config
from tests import REPO_ROOT as REPO

LOGGING_ORACLE = """
import hashlib, sys
from pathlib import Path
log = Path(sys.argv[1])
for line in sys.stdin:
    digest = hashlib.sha1(Path(line.split("\\t")[0]).read_bytes()).hexdigest()
    with open(log, "a") as handle:
        handle.write(digest + "\\n")
    print(-(int(digest[:6], 16) % 1000) / 1000)
"""


def loop_argv(
    model_path: str,
    output_dir: Path,
    oracle_command: tuple,
    run_name: str = "run",
    method: str = "UCB",
    rounds: int = 2,
) -> list[str]:
    """The command line of a tiny loop run (seconds) with an external oracle, as a user would type it."""
    return [
        "online_main_smc.py",
        "--config",
        str(REPO / f"config/{method}_smc.py") + ":tiny_jpeg",
        f"--config.model.path={model_path}",
        "--config.model.num_steps=2",
        "--config.model.guidance_scale=2.0",
        f"--config.output_dir={output_dir}",
        f"--config.run_name={run_name}",
        "--config.progress=False",
        "--config.report=False",
        "--config.device=cpu",
        "--config.smc.num_particles=2",
        "--config.smc.prompts_per_call=3",
        f"--config.loop.num_rounds={rounds}",
        "--config.loop.initial_queries=4",
        "--config.loop.queries_per_round=2",
        "--config.oracle.kind=external",
        f"--config.oracle.command={tuple(oracle_command)!r}",
        "--config.oracle.noise_std=0.01",
        "--config.evaluate.images_per_prompt=1",
        "--config.evaluate.num_prompts=2",
        *(f"--config.loop.{field}={value}" for field, value in NO_POOL.items()),  # the pool: test_pool.py
        *(
            ["--config.surrogate.kwargs.hidden=(16, 8)", "--config.surrogate.kwargs.max_epochs=5"]
            if method != "GP"
            else []
        ),
    ]


def small_config(model_path: str, output_dir: Path, variant: str = "tiny_jpeg", kind: str = "ucb"):
    """The embedded-world config shrunk to seconds: 8×8 images, 2 steps, 2 particles."""
    c = online_config(kind, variant, method="test")
    c.model.path = model_path
    c.model.num_steps = 2
    c.model.guidance_scale = 2.0
    c.output_dir = str(output_dir)
    c.run_name = "run"
    c.progress = False
    c.report = False
    c.device = "cpu"
    c.smc.num_particles = 2
    c.smc.prompts_per_call = 3
    c.loop.num_rounds = 3
    c.loop.initial_queries = 6
    c.loop.queries_per_round = 4
    c.evaluate.images_per_prompt = 1
    c.evaluate.num_prompts = 3
    c.loop.update(NO_POOL)  # the loop without a pool (the world variants' pool has its own tests: test_pool.py)
    if kind in ("ucb", "greedy", "bootstrap"):
        c.surrogate.kwargs.hidden = (16, 8)
        c.surrogate.kwargs.max_epochs = 20
    return c
