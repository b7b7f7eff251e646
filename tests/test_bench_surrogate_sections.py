"""``bench_surrogate --sections calibration`` into a fresh ``--out`` writes a summary of that section only."""

from __future__ import annotations

import json
import sys

import pytest

from benchmarks import bench_surrogate


def _stub_calibration(results: dict) -> None:
    """Stand-in for the slow calibration benchmark: the keys the real one writes, with tiny figures."""
    results["calibration_16d"] = {"n_train": 8, "surrogates": {}}
    results.setdefault("targets", {})["calibration_16d_ucb_truth_coverage_95_in_0.85_0.99"] = True


def _stub_calibration_world(results: dict) -> None:
    results["calibration_world"] = {"n_train": 8, "oracles": {}}


def test_calibration_only_into_fresh_out(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bench_surrogate, "bench_calibration", _stub_calibration)
    monkeypatch.setattr(bench_surrogate, "bench_calibration_world", _stub_calibration_world)
    out = tmp_path / "fresh" / "surrogate.json"
    monkeypatch.setattr(sys, "argv", ["bench_surrogate", "--sections", "calibration", "--out", str(out)])
    bench_surrogate.main()
    results = json.loads(out.read_text())
    assert results["sections_run_last"] == ["calibration"]
    assert "calibration_16d" in results and "calibration_world" in results
    assert "fit_n4096_d768" not in results and "bonus_throughput_1024_queries" not in results
    assert results["targets"] == {"calibration_16d_ucb_truth_coverage_95_in_0.85_0.99": True}


def test_record_targets_threads_without_fit() -> None:
    results = {"ucb_fit_n4096_d768_by_threads": {"rows": [{"threads": 1, "seconds": 12.0}]}}
    bench_surrogate._record_targets(results)
    assert results["targets"] == {"ucb_fit_le_15s_any_thread_count": True}


def test_record_targets_with_fit_and_threads() -> None:
    results = {
        "fit_n4096_d768": {"ucb": {"seconds": 20.0}},
        "bonus_throughput_1024_queries": {"speedup_bonus_only": 40.0},
        "ucb_fit_n4096_d768_by_threads": {"rows": [{"threads": 1, "seconds": 14.0}]},
    }
    bench_surrogate._record_targets(results)
    assert results["targets"] == {
        "ucb_fit_le_15s": False,
        "bonus_speedup_ge_50x": False,
        "ucb_fit_le_15s_any_thread_count": True,
    }
