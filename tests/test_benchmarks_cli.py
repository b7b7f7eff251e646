"""``python -m benchmarks.run``: ``--help`` and a wrong name run nothing; every benchmark in benchmarks/ is listed."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from benchmarks import run

BENCHMARKS_DIR = Path(run.__file__).parent


@pytest.fixture
def ran(monkeypatch) -> list[str]:
    """The names :func:`benchmarks.run.main` would run (the runner is replaced: nothing is imported or run)."""
    calls: list[str] = []
    monkeypatch.setattr(run, "run_benchmark", lambda name: calls.append(name) or 0)
    return calls


def _imported_benchmarks() -> set[str]:
    return {name for name in sys.modules if name.startswith("benchmarks.bench_")}


def test_help_lists_every_benchmark_and_runs_none(ran, capsys):
    before = _imported_benchmarks()
    with pytest.raises(SystemExit) as stop:
        run.main(["--help"])
    assert stop.value.code == 0
    assert ran == []
    assert _imported_benchmarks() == before
    out = capsys.readouterr().out
    assert all(name in out for name in run.BENCHMARKS)


def test_an_unknown_benchmark_is_one_line_and_exit_2(ran, capsys):
    assert run.main(["bench_smc_overhead", "bench_nope"]) == 2
    assert ran == []
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert "'bench_nope'" in err and "bench_online" in err


def test_an_unknown_option_is_one_line_and_exit_2(ran, capsys):
    with pytest.raises(SystemExit) as stop:
        run.main(["--quick"])
    assert stop.value.code == 2
    assert ran == []
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_no_argument_runs_every_benchmark_in_the_folder(ran):
    assert run.main([]) == 0
    on_disk = {path.stem for path in BENCHMARKS_DIR.glob("bench_*.py")}
    assert sorted(ran) == sorted(on_disk)


def test_named_benchmarks_run_in_the_given_order(ran):
    assert run.main(["bench_gp", "bench_world"]) == 0
    assert ran == ["bench_gp", "bench_world"]


def test_a_benchmark_sees_no_option_of_this_command(monkeypatch):
    seen: list[list[str]] = []
    fake = type(sys)("benchmarks.bench_fake")
    fake.main = lambda: seen.append(list(sys.argv[1:]))
    monkeypatch.setitem(sys.modules, "benchmarks.bench_fake", fake)
    monkeypatch.setattr(sys, "argv", ["benchmarks.run", "bench_fake"])
    assert run.run_benchmark("bench_fake") == 0
    assert seen == [[]]
    assert sys.argv == ["benchmarks.run", "bench_fake"]
