"""Resuming from the run alone: ``--config.resume_from=DIR`` (or ``--resume DIR``) needs neither
``--config`` nor the original overrides; only fields typed on the command line are compared with
the run's ``config.json`` (issue 29, item 2)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

from online.online_main_smc import main
from online.run_directory import complete_rounds
from tests.online.online_helpers import LOGGING_ORACLE, REPO, loop_argv

INITIAL, PER_ROUND = 4, 2  # loop_argv's loop.initial_queries and loop.queries_per_round


@pytest.fixture(scope="module")
def started(tiny_model, tmp_path_factory) -> tuple[Path, Path]:
    """A 2-round run started with many overrides (a small model, query counts, an external oracle
    that logs each item it is asked about) made once; tests resume copies of it: ``(run, log)``."""
    root = tmp_path_factory.mktemp("started")
    (root / "oracle.py").write_text(LOGGING_ORACLE)
    log = root / "asked.log"
    assert main(loop_argv(tiny_model, root / "runs", (sys.executable, str(root / "oracle.py"), str(log)))) == 0
    assert len(log.read_text().splitlines()) == INITIAL + PER_ROUND
    return root / "runs" / "run", log


def _copy(started, tmp_path: Path) -> tuple[Path, Path]:
    run = tmp_path / "runs" / "run"
    shutil.copytree(started[0], run)
    return run, started[1]  # the copy's stored oracle command logs to the same file


def _extended(run: Path, log: Path, argv: list[str], capsys) -> None:
    """Runs `argv` (a resume to 3 rounds) and checks it completes, asking only the new round's items."""
    before = len(log.read_text().splitlines())
    capsys.readouterr()
    status = main(["online_main_smc.py", *argv])
    assert status == 0, capsys.readouterr().err
    assert complete_rounds(run) == [0, 1, 2]
    lines = log.read_text().splitlines()
    paid, new = lines[: INITIAL + PER_ROUND], lines[before:]  # the run's two rounds; this resume's asks
    assert len(new) == PER_ROUND and not set(new) & set(paid), "an item was paid for twice"


def test_a_run_resumes_from_its_directory_alone(started, tmp_path, capsys):
    run, log = _copy(started, tmp_path)
    _extended(run, log, [f"--config.resume_from={run}", "--config.loop.num_rounds=3"], capsys)


def test_a_config_file_without_the_original_overrides_resumes(started, tmp_path, capsys):
    run, log = _copy(started, tmp_path)
    config = str(REPO / "config/UCB_smc.py") + ":tiny_jpeg"  # its query counts and model differ from the run's
    argv = ["--config", config, f"--config.resume_from={run}", "--config.loop.num_rounds=3"]
    _extended(run, log, argv, capsys)


def test_the_resume_alias_names_the_directory(started, tmp_path, capsys):
    run, log = _copy(started, tmp_path)
    _extended(run, log, ["--resume", str(run), "--config.loop.num_rounds=3"], capsys)


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.rglob("*")) if p.name != ".lock"}


def test_a_typed_field_that_differs_is_refused_naming_each_one(started, tmp_path, capsys):
    run, log = _copy(started, tmp_path)
    config = str(REPO / "config/UCB_smc.py") + ":tiny_jpeg"
    for prefix in ([], ["--config", config]):  # alone, and with a config file whose untyped fields differ too
        before, asked = _snapshot(tmp_path), log.read_text()
        capsys.readouterr()
        argv = [*prefix, f"--config.resume_from={run}", "--config.seed=5", "--config.loop.initial_queries=6"]
        assert main(["online_main_smc.py", *argv, "--config.loop.num_rounds=3"]) == 2
        lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
        assert len(lines) == 1, lines
        assert "seed is 0 in its config.json but 5 here" in lines[0], lines[0]
        assert "loop.initial_queries is 4 in its config.json but 6 here" in lines[0], lines[0]
        assert "queries_per_round" not in lines[0] and "model.path" not in lines[0], lines[0]  # not typed
        assert _snapshot(tmp_path) == before and log.read_text() == asked, "a refused resume changed a file"


def test_without_config_or_resume_from_the_line_names_both(capsys):
    assert main(["online_main_smc.py", "--config.seed=5"]) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and "--config is required" in lines[0] and "resume_from" in lines[0], lines


def test_an_evaluation_resumes_from_its_directory_alone(started, tiny_model, tmp_path, capsys):
    run, log = _copy(started, tmp_path)
    oracle = (sys.executable, str(log.parent / "oracle.py"), str(log))
    evaluate = ["--config.mode=evaluate", f"--config.reward_model_path={run / 'round_0001'}", "--config.run_name=eval"]
    assert main([*loop_argv(tiny_model, tmp_path / "runs", oracle), *evaluate]) == 0, capsys.readouterr().err
    asked = log.read_text()
    status = main(["online_main_smc.py", f"--config.resume_from={tmp_path / 'runs' / 'eval'}"])  # mode: its marker
    assert status == 0, capsys.readouterr().err
    assert log.read_text() == asked, "a resumed evaluation asked an item again"
