"""A run directory made before acquisitions left the models (β in ``surrogate.kwargs``, kind ``"greedy"``)
resumes with a deprecation naming 0.4.0 and gives the numbers that code gave, and evaluate mode on its
checkpoint gives the same evaluation (``tests/fixtures/make_pre_acquisition.py`` made the files)."""

from __future__ import annotations

import json
import shutil
import stat
from pathlib import Path

import pytest
import torch

from surrogate.deprecation import ACQUISITION_SPLIT_REMOVAL
from tests.fixtures.make_pre_acquisition import FIXTURE, evaluate_argv, run_argv

EXPECTED = json.loads((FIXTURE / "expected.json").read_text())
#: The fixture run's β in the current config format (it stored ``surrogate.kwargs.beta=1.5``).
NEW_BETA = ("--config.acquisition.beta=1.5",)


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the fixture was made on one thread; the runs are compared bit for bit
    yield
    torch.set_num_threads(threads)


def _copy_run(name: str, runs: Path) -> Path:
    """A writable copy of a fixture run under ``runs`` (the fixture itself is never written)."""
    target = runs / name
    shutil.copytree(FIXTURE / name, target)
    for path in [target, *target.rglob("*")]:
        path.chmod(path.stat().st_mode | stat.S_IWUSR)
    return target


def _rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _assert_same(got, expected, where: str = "") -> None:
    """Every field the old code recorded, at any depth, has the same value (newer versions may record
    more fields); ``seconds`` fields are times, which differ between any two runs."""
    if isinstance(expected, dict):
        assert isinstance(got, dict), where
        for key, value in expected.items():
            if key != "seconds":
                assert key in got, f"{where}.{key}"
                _assert_same(got[key], value, f"{where}.{key}")
    elif isinstance(expected, list):
        assert isinstance(got, list) and len(got) == len(expected), where
        for i, (a, b) in enumerate(zip(got, expected)):
            _assert_same(a, b, f"{where}[{i}]")
    else:
        assert got == expected, f"{where}: {got!r} != {expected!r}"


def _resume(run: Path, argv: list[str]) -> None:
    from online.online_main_smc import main

    with pytest.warns(FutureWarning, match=f"pre-0.2 run config.*{ACQUISITION_SPLIT_REMOVAL}"):
        assert main([*argv, f"--config.resume_from={run}"]) == 0


def test_old_ucb_run_resumes_with_identical_rounds_and_evaluates_identically(tmp_path):
    from online.online_main_smc import main

    run = _copy_run("run", tmp_path / "runs")
    _resume(run, run_argv(tmp_path / "runs", "run", 3, NEW_BETA))
    rows = _rows(run)
    assert [row["round"] for row in rows] == [0, 1, 2]
    for got, expected in zip(rows, [*EXPECTED["run_rows"], EXPECTED["resumed_row"]]):
        _assert_same(got, expected)
    recorded = json.loads((run / "config.json").read_text())["acquisition"]
    assert recorded == {
        "kind": "ucb",
        "beta": 1.5,
        "clip": 10.0,
        "beta_schedule": "constant",
        "exploit_last_round": False,
    }
    evaluation = tmp_path / "evaluations"
    with pytest.warns(FutureWarning, match=f"pre-0.2 format.*{ACQUISITION_SPLIT_REMOVAL}"):
        status = main(evaluate_argv(evaluation, FIXTURE / "run" / "round_0001", NEW_BETA))
    assert status == 0
    metrics = json.loads((evaluation / "evaluation" / "metrics.json").read_text())
    _assert_same(metrics, EXPECTED["evaluate_metrics"])


def test_old_greedy_run_resumes_as_the_ucb_surrogate_with_the_posterior_mean(tmp_path):
    run = _copy_run("greedy_run", tmp_path / "runs")
    _resume(run, run_argv(tmp_path / "runs", "greedy_run", 3, method="Greedy"))
    rows = _rows(run)
    for got, expected in zip(rows, [*EXPECTED["greedy_run_rows"], EXPECTED["greedy_resumed_row"]]):
        _assert_same(got, expected)
    config = json.loads((run / "config.json").read_text())
    assert config["surrogate"]["kind"] == "ucb" and config["acquisition"]["kind"] == "mean"
