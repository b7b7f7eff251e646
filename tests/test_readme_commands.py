"""Every CPU command of the README's "Running it" table runs as written, with only size settings added
(fewer steps, rounds and candidates, the tiny random model): the loop, evaluate mode on its last round, a
resume of the finished run, an extension, the evaluation's resume, both tools' ``--help``, offline DAS on the
world and the toy (that last test with ``-m slow``). The commands are read from the README itself, so an
edit there is tested here."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys

import pytest

from tests import REPO_ROOT

#: Size settings only: what makes a command take seconds here (the tiny random model, 2 steps, 2 rounds,
#: small pools); nothing that changes which code runs.
LOOP_SIZE = (
    "--config.model.num_steps=2",
    "--config.loop.num_rounds=2",
    "--config.loop.initial_queries=4",
    "--config.loop.queries_per_round=2",
    "--config.loop.pool_size=8",
    "--config.loop.pool_pretrained=4",
    "--config.loop.initial_pool_size=8",
    "--config.evaluate.num_prompts=2",
    "--config.progress=False",
    "--config.report=False",
)
ENTRY = {"das-online": "online", "das-sample": "dasapp"}  # the console scripts' mains, as `python -m`


def table_commands() -> dict[str, str]:
    """The "Running it" table: what → command (the first command of each cell)."""
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Running it") :]
    table = section[section.index("| what | command |") :]
    table = table[: table.index("\n\n")]
    rows = {}
    for line in table.splitlines()[2:]:
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        found = re.findall(r"`([^`]+)`", cells[1])
        if found:
            rows[cells[0]] = found[0]
    return rows


def run(command: str, cwd, *extra: str, timeout: int = 240) -> subprocess.CompletedProcess:
    """`command` as the README writes it, `.venv/bin/<tool>` run as this interpreter's module."""
    words = shlex.split(command)
    program = words[0].removeprefix(".venv/bin/")
    if program in ENTRY:
        words = [sys.executable, "-m", ENTRY[program], *words[1:]]
    elif program == "python":
        words = [sys.executable, *words[1:]]
    return subprocess.run([*words, *extra], cwd=cwd, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A working directory holding the repository's config/ (the commands name it relative), and the tiny model."""
    work = tmp_path_factory.mktemp("readme")
    (work / "config").symlink_to(REPO_ROOT / "config")
    return work


@pytest.fixture(scope="module")
def tiny_model_path(tmp_path_factory) -> str:
    from tests.tiny_components import save_pixel_model

    return str(save_pixel_model(tmp_path_factory.mktemp("tiny_model")))


def test_the_table_holds_the_commands_this_test_runs():
    rows = table_commands()
    for what in (
        "online loop on the embedded world (CPU)",
        "evaluate a round's surrogate",
        "resume a run after a crash",
        "resume an interrupted evaluation",
        "what can be set",
        "offline DAS sampling",
        "the toy (exact targets)",
    ):
        assert what in rows, what


def test_the_loop_commands_run_as_written(workdir, tiny_model_path):
    rows = table_commands()
    model = f"--config.model.path={tiny_model_path}"
    done = run(rows["online loop on the embedded world (CPU)"], workdir, model, *LOOP_SIZE)
    assert done.returncode == 0, done.stderr[-2000:]
    run_dir = workdir / "runs" / "GP-tiny_jpeg"
    assert (run_dir / "round_0001" / "COMPLETE").is_file()
    evaluate = rows["evaluate a round's surrogate"].replace("round_0006", "round_0001")
    done = run(evaluate, workdir, model, "--config.model.num_steps=2", "--config.evaluate.num_prompts=2")
    assert done.returncode == 0, done.stderr[-2000:]
    assert (workdir / "runs" / "GP-tiny_evaluate" / "metrics.json").is_file()
    done = run(rows["resume a run after a crash"], workdir)  # a finished run: nothing left to do
    assert done.returncode == 0, done.stderr[-2000:]
    done = run(rows["resume a run after a crash"], workdir, "--config.loop.num_rounds=3")  # extend on purpose
    assert done.returncode == 0, done.stderr[-2000:]
    assert (run_dir / "round_0002" / "COMPLETE").is_file()
    done = run(rows["resume an interrupted evaluation"], workdir)
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.mark.slow  # 16 s; both tools' --help, world sampling and the toy have fast tests of their own
def test_help_offline_sampling_and_the_toy_run_as_written(workdir):
    rows = table_commands()
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    cell = readme[readme.index("| what can be set |") :].splitlines()[0]
    helps = re.findall(r"`([^`]+)`", cell)
    assert len(helps) == 2
    for command in helps:
        done = run(command, workdir)
        assert done.returncode == 0 and "--config" in done.stdout, command
    settings = ("--config.model.num_steps=2", "--config.smc.num_particles=2")
    done = run(rows["offline DAS sampling"], workdir, *settings)
    assert done.returncode == 0, done.stderr[-2000:]
    done = run(rows["the toy (exact targets)"], workdir, "--samples", "50", "--particles", "8", "--steps", "10")
    assert done.returncode == 0, done.stderr[-2000:]
    assert (workdir / "runs" / "toy_demo").is_dir()
