"""Progress for people and for logs: one plain line per round without a terminal, a bar with one, and an
estimate of the time left from the last guided round (round 0 is far cheaper and would promise too early an end)."""

from __future__ import annotations

import io

import pytest

from online.progress import RoundProgress, bars_wanted, duration, round_line, time_left


def row(k: int, seconds: float, mean: float = -1.0) -> dict:
    return {"round": k, "queries_total": 48 + 16 * k, "true_reward": {"mean": mean}, "seconds": {"total": seconds}}


def test_the_time_left_is_the_last_guided_rounds_time_times_the_rounds_left():
    assert time_left(0, 7, row(0, 5.0)) is None  # round 0 says nothing about a guided round's time
    assert time_left(1, 7, row(1, 20.0)) == pytest.approx(5 * 20.0)
    assert time_left(4, 7, row(4, 30.0)) == pytest.approx(2 * 30.0)
    assert time_left(6, 7, row(6, 30.0)) == 0
    assert duration(125) == "2 min 05 s" and duration(42.4) == "42 s"


def test_a_round_line_says_reward_queries_time_and_what_is_left():
    assert round_line(0, 7, row(0, 6.0, -1.0781)) == "round 0/6: true reward -1.078, 48 queries so far in 6 s"
    line = round_line(2, 7, row(2, 20.0, -1.02))
    assert line == "round 2/6: true reward -1.02, 80 queries so far in 20 s; about 1 min 20 s left"
    assert round_line(6, 7, row(6, 20.0)).endswith("; done")


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_without_a_terminal_each_round_is_one_plain_line_and_with_one_a_bar(capsys):
    log = io.StringIO()
    progress = RoundProgress(0, 3, enabled=True, bar=True, stream=log)
    for k in range(3):
        progress.done(k, row(k, 10.0))
    progress.close()
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines] == ["round 0/2", "round 1/2", "round 2/2"]
    assert log.getvalue() == ""  # no bar redraws in a log
    terminal = FakeTerminal()
    progress = RoundProgress(1, 3, enabled=True, bar=True, stream=terminal)
    progress.done(1, row(1, 10.0))
    progress.close()
    assert capsys.readouterr().out == "" and "rounds" in terminal.getvalue() and "left=10 s" in terminal.getvalue()
    quiet = RoundProgress(0, 3, enabled=False, bar=True, stream=terminal)
    quiet.done(0, row(0, 1.0))
    assert capsys.readouterr().out == ""
    assert not bars_wanted(True, True)  # pytest's standard error is no terminal


def test_a_run_without_progress_bars_still_prints_a_line_per_round(make_config, accelerator, capsys):
    from online.loop import run_training

    config = make_config()
    assert config.progress is False
    run_training(config, accelerator)
    out = capsys.readouterr().out
    assert [line.split(":")[0] for line in out.splitlines() if line.startswith("round ") and ":" in line] == [
        "round 0/2",
        "round 1/2",
        "round 2/2",
    ]
    assert "about" in [line for line in out.splitlines() if line.startswith("round 1/2")][0]
