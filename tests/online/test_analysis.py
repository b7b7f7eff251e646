"""Offline analysis on tiny runs made here: every figure, the tables and a self-contained report."""

from __future__ import annotations

import re

import pytest

from online.analysis import group, main, summary_rows, write_report
from online.loop import run_training

FIGURES = ("reward_vs_queries", "diversity", "sampler", "overoptimization", "calibration", "cross_reward")


@pytest.fixture(scope="module")
def three_runs(tiny_model, tmp_path_factory):
    """UCB with seeds 0 and 1, and greedy seed 0 under a folder name that says UCB."""
    from accelerate import Accelerator

    from tests.online.online_helpers import small_config

    out = tmp_path_factory.mktemp("analysis_runs")
    runs = []
    for kind, seed, name in (("ucb", 0, "a"), ("ucb", 1, "b"), ("greedy", 0, "UCB-seed1-looking")):
        config = small_config(tiny_model, out, kind=kind)
        config.seed, config.run_name = seed, name
        config.report = name == "a"  # the loop's own report, on one run
        runs.append(run_training(config, Accelerator(cpu=True)))
    return runs


def test_the_loop_writes_its_own_report(three_runs):
    report = three_runs[0] / "report" / "report.html"
    assert report.is_file() and "data:image/png;base64," in report.read_text()
    assert not (three_runs[1] / "report").exists()  # report=False


def test_the_report_has_every_figure_table_and_embeds_its_images(three_runs, tmp_path):
    written = write_report(three_runs, tmp_path / "report", "tiny")
    for name in FIGURES:
        assert written[name].is_file() and written[name].stat().st_size > 1000, name
    # one grid per (oracle, method), of its lowest seed
    assert sorted(name for name in written if name.startswith("grid_")) == [
        "grid_jpeg-Greedy-seed0",
        "grid_jpeg-UCB-seed0",
    ]
    html = written["report"].read_text()
    assert html.count("data:image/png;base64,") == len([p for p in written.values() if p.suffix == ".png"])
    assert not re.search(r"src=['\"](?!data:)", html)  # nothing it would have to fetch: it opens offline
    csv_lines = written["summary_csv"].read_text().splitlines()
    assert csv_lines[0].startswith("oracle,method,seeds,queries,final_true_reward_mean,final_true_reward_se")
    assert len(csv_lines) == 3 and written["summary_md"].read_text().count("\n") == 4


def test_runs_are_grouped_by_their_configs_not_their_folder_names(three_runs):
    from online.analysis import load_run

    runs = [load_run(path, details=False) for path in three_runs]
    assert {key: [r.seed for r in members] for key, members in group(runs).items()} == {
        ("jpeg", "Greedy"): [0],
        ("jpeg", "UCB"): [0, 1],
    }
    rows = {row["method"]: row for row in summary_rows(runs)}
    assert rows["UCB"]["seeds"] == [0, 1] and rows["UCB"]["queries"] == 6 + 4 + 4
    finals = [r.rows[-1]["true_reward"]["mean"] for r in runs[:2]]
    assert rows["UCB"]["final_true_reward_mean"] == pytest.approx(sum(finals) / 2)
    assert rows["UCB"]["final_true_reward_se"] == pytest.approx(abs(finals[0] - finals[1]) / 2)


def test_a_corrupt_file_is_one_line_and_the_rest_is_written(three_runs, tmp_path, capsys):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(three_runs[1], broken)
    shard = broken / "data" / "round_0001.safetensors"
    shard.write_bytes(b"not a safetensors file")
    (broken / "round_0001" / "surrogate.safetensors").unlink()
    capsys.readouterr()
    written = write_report([three_runs[0], broken], tmp_path / "report")
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert any(str(shard) in line for line in err), err
    assert any("round_0001/surrogate.safetensors" in line for line in err), err
    assert all(line.startswith("warning: ") for line in err)
    assert "Problems" in written["report"].read_text() and written["calibration"].is_file()


def test_the_command_line(three_runs, tmp_path, capsys):
    assert main([str(three_runs[0]), "--out", str(tmp_path / "cli")]) == 0
    assert (tmp_path / "cli" / "report.html").is_file()
    assert main([str(tmp_path / "nowhere"), "--out", str(tmp_path / "x")]) == 2
    assert "not a run directory" in capsys.readouterr().err


def test_a_folder_of_runs_is_read_and_a_folder_without_one_is_refused(three_runs, tmp_path, capsys):
    folder = three_runs[0].parent
    assert main([str(folder), "--out", str(tmp_path / "all")]) == 0
    assert (tmp_path / "all" / "summary.csv").read_text().count("\n") == 3  # header, Greedy, UCB
    empty = tmp_path / "not_runs"
    (empty / "notes").mkdir(parents=True)
    capsys.readouterr()
    assert main([str(empty), "--out", str(tmp_path / "none")]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and "no run in" in err[0] and str(empty) in err[0]
    assert not (tmp_path / "none").exists()


def test_the_same_seed_twice_counts_once(three_runs, tmp_path, capsys):
    import shutil

    from online.analysis import load_run

    copy = tmp_path / "a-again"
    shutil.copytree(three_runs[0], copy)
    runs = [load_run(path, details=False) for path in [*three_runs, copy]]
    capsys.readouterr()
    groups = group(runs)
    assert [r.seed for r in groups[("jpeg", "UCB")]] == [0, 1]
    assert [r.path for r in groups[("jpeg", "UCB")]][0] == three_runs[0]
    assert "is seed 0 of jpeg/UCB again" in capsys.readouterr().err


def test_a_method_name_comes_from_the_config_or_its_surrogate_and_guidance():
    from pathlib import Path

    from online.analysis import Run

    def method(config: dict) -> str:
        return Run(Path("/x"), config, []).method

    assert method({"surrogate": {"kind": "ucb"}, "smc": {"guidance": "optimistic"}}) == "UCB"
    assert method({"surrogate": {"kind": "bootstrap"}, "smc": {"guidance": "thompson"}}) == "Bootstrap (thompson)"
    assert method({"surrogate": {"kind": "greedy"}, "smc": {"guidance": "none"}}) == "Pretrained"
    assert method({"surrogate": {"kind": "greedy"}, "smc": {"guidance": "oracle"}}) == "Ceiling"
    assert (
        method({"method": "Non-adaptive", "surrogate": {"kind": "greedy"}, "smc": {"guidance": "mean"}})
        == "Non-adaptive"
    )
    assert method({"method": "  ", "surrogate": {"kind": "gp"}}) == "GP"
