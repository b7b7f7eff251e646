"""Clean stops: SIGTERM and SIGINT while a query is in flight, an oracle that times out, the
rating page, and ``python -m das``.

The real entry point runs in a fresh interpreter; its external oracle hangs on a chosen call
with a grandchild of its own. The stop must exit 143 (SIGTERM) or 130 (SIGINT) with exactly
one line on stderr naming the resume command, leave the run unlocked, leave no oracle
process (child or grandchild), and the printed command must finish the run with the answers
of an uninterrupted run, no item answered twice.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from dasapp.run_dirs import DirectoryLock
from dasapp.stopping import Stopped, deferred, stop_on_signals
from online.oracles import ExternalCommandOracle, QueryPolicy, query_with_retries
from online.run_directory import complete_rounds
from online.storage import AnswerJournal
from tests import REPO_ROOT as REPO
from tests.online.online_helpers import loop_argv
from tests.online.test_kill_resume import assert_same_answers, assert_same_run

ROUNDS = 2  # round 0 asks 4 items, round 1 asks 2; one item per call (oracle.batch_size=1)
HANG_AT_CALL = 6  # the 2nd call of round 1: round 0 and round 1's first item are journaled

# Answers each item (a digest of its PNG) and logs it as answered. On the call numbered in
# <state>/hang_at it starts a sleeping grandchild, writes both pids and a "started" file,
# and hangs without answering.
HANGING_ORACLE = """
import hashlib, os, subprocess, sys, time
from pathlib import Path
log, state = Path(sys.argv[1]), Path(sys.argv[2])
calls = state / "calls"
call = int(calls.read_text()) + 1 if calls.exists() else 1
calls.write_text(str(call))
hang = state / "hang_at"
if hang.exists() and int(hang.read_text()) == call:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
    (state / "pids").write_text(f"{os.getpid()} {child.pid}")
    (state / "started").write_text("")
    time.sleep(300)
digests = [hashlib.sha1(Path(line.split("\\t")[0]).read_bytes()).hexdigest() for line in sys.stdin]
with open(log, "a") as handle:
    handle.writelines(d + "\\n" for d in digests)
for d in digests:
    print(-(int(d[:6], 16) % 1000) / 1000)
"""


def alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie, killed and waiting for a reaper, counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def still_alive(pids: list[int], grace_s: float = 5.0) -> list[int]:
    """The `pids` still running after up to `grace_s` seconds (a SIGKILLed process takes a moment to go)."""
    deadline = time.monotonic() + grace_s
    while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    return [pid for pid in pids if alive(pid)]


def kill_leftovers(pids: list[int]) -> None:
    for pid in pids:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)


def wait_for(path: Path, process: subprocess.Popen | None = None, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process is None or process.poll() is None, process.communicate()[1][-3000:]
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def environment() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def loop_command(tiny_model: str, tmp_path: Path, name: str) -> tuple[list[str], Path, Path]:
    """The entry point's command line for run `name` with the hanging oracle: ``(command, log, state)``."""
    script, state = tmp_path / "oracle.py", tmp_path / f"{name}_state"
    script.write_text(HANGING_ORACLE)
    state.mkdir()
    log = tmp_path / f"{name}.log"
    oracle = (sys.executable, str(script), str(log), str(state))
    argv = loop_argv(tiny_model, tmp_path / "runs", oracle, name, "UCB", ROUNDS) + ["--config.oracle.batch_size=1"]
    return [sys.executable, "online/online_main_smc.py", *argv[1:]], log, state


@pytest.fixture(scope="module")
def reference(tiny_model, tmp_path_factory):
    """An uninterrupted run: ``(run_dir, answered log lines)``."""
    tmp_path = tmp_path_factory.mktemp("reference")
    command, log, _ = loop_command(tiny_model, tmp_path, "reference")
    done = subprocess.run(command, cwd=REPO, env=environment(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return tmp_path / "runs" / "reference", log.read_text().splitlines()


def stop_mid_query(tiny_model, tmp_path: Path, signal_number: int, status: int) -> tuple[Path, str, Path]:
    """Starts the entry point, stops it by `signal_number` while round 1's second item is being
    asked, and checks the stop; returns ``(run_dir, the stderr line, the oracle's log)``."""
    command, log, state = loop_command(tiny_model, tmp_path, "stopped")
    (state / "hang_at").write_text(str(HANG_AT_CALL))
    run_dir = tmp_path / "runs" / "stopped"
    process = subprocess.Popen(command, cwd=REPO, env=environment(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    pids: list[int] = []
    try:
        wait_for(state / "started", process)
        pids = [int(p) for p in (state / "pids").read_text().split()]
        assert all(alive(pid) for pid in pids)
        process.send_signal(signal_number)
        _, stderr = process.communicate(timeout=60)
        left = still_alive(pids)
    finally:
        process.kill()
        kill_leftovers(pids)
    assert process.returncode == status, stderr.decode()[-3000:]
    lines = stderr.decode().splitlines()
    name = signal.Signals(signal_number).name
    assert len(lines) == 1 and lines[0].startswith(f"stopped by {name}; every answer so far is saved"), lines
    assert lines[0].endswith(f"--config.resume_from={run_dir}")
    assert len(pids) == 2 and left == []  # the oracle and its grandchild were killed
    with DirectoryLock(run_dir):  # the lock is free at once
        pass
    # the answer of round 1's first item was journaled; the item in flight was not
    assert complete_rounds(run_dir) == [0]
    assert sorted(AnswerJournal(run_dir / "round_0001" / "answers.jsonl").read()) == [0]
    return run_dir, lines[0], log


def test_ctrl_c_mid_query_exits_130_with_one_line_and_no_oracle_left(tiny_model, tmp_path):
    stop_mid_query(tiny_model, tmp_path, signal.SIGINT, 130)


def test_sigterm_mid_query_exits_143_and_the_printed_resume_finishes_the_run(reference, tiny_model, tmp_path):
    run_dir, line, log = stop_mid_query(tiny_model, tmp_path, signal.SIGTERM, 143)
    resume = shlex.split(line.split(" with ", 1)[1])
    assert resume[:2] == ["python", "online/online_main_smc.py"]
    done = subprocess.run(
        [sys.executable, *resume[1:]], cwd=REPO, env=environment(), capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    reference_dir, reference_log = reference
    assert complete_rounds(run_dir) == list(range(ROUNDS))
    assert log.read_text().splitlines() == reference_log  # every item answered once, in the same order
    assert_same_run(reference_dir, run_dir)
    assert_same_answers(reference_dir, run_dir, ROUNDS)


def test_the_stop_line_says_what_to_do_at_each_stage(tiny_model, tmp_path):
    from dasapp.config_cli import parse_config_argv
    from dasapp.run_dirs import TOOL, write_marker
    from online.online_main_smc import EXAMPLE, resume_command, stop_message

    stop = Stopped(signal.SIGTERM)
    argv = ["online_main_smc.py", *loop_argv(tiny_model, tmp_path / "runs", ("rate", "a b"), "fresh")[1:]]
    assert stop_message(stop, argv, None).startswith("stopped by SIGTERM before the run started; nothing was")
    config, _ = parse_config_argv(argv, EXAMPLE)
    not_ready = "stopped by SIGTERM before the run directory was ready; no query was paid: run the same command"
    assert stop_message(stop, argv, config).startswith(not_ready)  # no directory yet
    run_dir = tmp_path / "runs" / "fresh"
    run_dir.mkdir(parents=True)
    (run_dir / "run.json").write_text(json.dumps({"tool": TOOL, "kind": "online-train", "pid": -1}))
    assert stop_message(stop, argv, config).startswith(not_ready)  # an earlier run there, not replaced yet
    write_marker(run_dir, "online-train")  # this process made it
    line = stop_message(stop, argv + ["--config.overwrite", "True"], config)
    assert line.startswith("stopped by SIGTERM; every answer so far is saved: resume the run with python ")
    resume = shlex.split(line.split(" with ", 1)[1])
    assert resume == ["python", "online/online_main_smc.py", f"--config.resume_from={run_dir}"]  # the run's own config
    assert resume_command(run_dir) == shlex.join(resume)


HANGING_COMMAND = """
import os, subprocess, sys, time
from pathlib import Path
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
Path(sys.argv[1]).write_text(f"{os.getpid()} {child.pid}")
time.sleep(300)
"""


def hanging_oracle(tmp_path: Path, timeout_s: float) -> tuple[ExternalCommandOracle, Path]:
    script = tmp_path / "hang.py"
    script.write_text(HANGING_COMMAND)
    pids = tmp_path / "pids"
    return ExternalCommandOracle([sys.executable, str(script), str(pids)], timeout_s=timeout_s), pids


def test_a_timed_out_external_oracle_leaves_no_child_or_grandchild(tmp_path):
    oracle, pid_file = hanging_oracle(tmp_path, timeout_s=2.0)
    rows: list[dict] = []
    pids: list[int] = []
    try:
        query_with_retries(
            oracle, torch.zeros(1, 3, 4, 4), ["p"], [0], QueryPolicy(max_retries=0, timeout_s=2.0), rows.extend
        )
        pids = [int(p) for p in pid_file.read_text().split()]
        left = still_alive(pids)
    finally:
        kill_leftovers(pids)
    assert [row["status"] for row in rows] == ["failed"] and "timed out" in rows[0]["error"]
    assert len(pids) == 2 and left == []


def test_a_stop_while_the_external_oracle_runs_kills_its_process_group(tmp_path):
    oracle, pid_file = hanging_oracle(tmp_path, timeout_s=60.0)
    sender = threading.Thread(target=_signal_when, args=(pid_file, signal.SIGTERM), daemon=True)
    pids: list[int] = []
    try:
        with stop_on_signals():
            sender.start()
            with pytest.raises(Stopped) as stopped:
                query_with_retries(
                    oracle, torch.zeros(1, 3, 4, 4), ["p"], [0], QueryPolicy(timeout_s=60.0), lambda rows: None
                )
        pids = [int(p) for p in pid_file.read_text().split()]
        left = still_alive(pids)
    finally:
        kill_leftovers(pids)
    assert stopped.value.exit_status == 143 and len(pids) == 2 and left == []


def _signal_when(path: Path, signal_number: int) -> None:
    wait_for(path, timeout=60)
    os.kill(os.getpid(), signal_number)


def test_a_stop_inside_a_deferred_block_waits_for_its_end():
    done = []
    with stop_on_signals():
        with pytest.raises(Stopped) as stopped:
            with deferred():
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.05)  # the handler has run by now: the stop is pending
                done.append("journaled")
            done.append("after the block")  # never reached
    assert done == ["journaled"] and stopped.value.exit_status == 130


def test_the_rating_page_is_shut_down_when_the_loop_is_stopped():
    pytest.importorskip("uvicorn", reason='the human oracle needs its extra: pip install "das-toolkit[human]"')
    import socket
    import urllib.request

    from online.human.oracle import HumanOracle

    oracle = HumanOracle(announce=lambda line: None)
    saved: list[dict] = []

    def rate_one_then_stop() -> None:
        assert oracle.serving.wait(60)
        request = urllib.request.Request(
            f"http://127.0.0.1:{oracle.port}/api/rate?token={oracle.token}",
            data=json.dumps({"index": 1, "rating": 7}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            assert json.loads(response.read())["saved"] is True
        os.kill(os.getpid(), signal.SIGTERM)

    helper = threading.Thread(target=rate_one_then_stop, daemon=True)
    with stop_on_signals():
        helper.start()
        with pytest.raises(Stopped):
            oracle.rate_items(torch.rand(3, 3, 8, 8), ["a", "b", "c"], [0, 1, 2], saved.extend)
    helper.join(10)
    assert [(row["index"], row["value"]) for row in saved] == [(1, 7.0)]  # the given rating reached the journal
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", oracle.port), timeout=2):
        pass  # the page no longer listens


def test_a_rating_the_stopped_loop_never_took_is_answered_at_once():
    from online.human.oracle import RatingBoard

    board = RatingBoard()
    board.open({0: ("a", b"png"), 1: ("b", b"png")}, {})
    ticket = board.claim(0, 5)  # the page's request waits on it; the loop is stopped before taking it
    board.close()
    assert ticket.done.is_set() and ticket.error == "the loop stopped before saving it"


DAS_STOPPED = """
import os, signal, sys, time
import dasapp.offline
def run(config):
    os.kill(os.getpid(), signal.{name})
    time.sleep(30)
dasapp.offline.run = run
from dasapp.cli import main
sys.exit(main(["das", "--config", "config/sd.py:world"]))
"""


@pytest.mark.parametrize(("name", "status"), [("SIGINT", 130), ("SIGTERM", 143)])
def test_python_m_das_stopped_ends_with_one_line(name, status):
    done = subprocess.run(
        [sys.executable, "-c", DAS_STOPPED.format(name=name)],
        cwd=REPO,
        env=environment(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = done.stderr.splitlines()
    assert done.returncode == status and len(lines) == 1, done.stderr[-3000:]
    assert lines[0].startswith(f"das: stopped by {name}")
