"""SIGKILL the loop at chosen points, resume it, and compare with a run never interrupted:
bit for bit, for every surrogate kind, counting the oracle's calls through a logging oracle.

The loop kills itself (``DAS_ONLINE_CRASH_AT=<point>:<round>``, see ``online/faults.py``) so
the kill lands at a known place: ``sampled`` (batch sampled, nothing of the round on disk),
``query`` (the round's first answer journaled), ``shard`` (dataset shard written),
``checkpoint`` (surrogate written, the round not yet complete). Every process runs with one
thread, as the reference does, so the two are comparable bit for bit.

Nothing is asked again after those points, so they cannot show that an item re-asked on
resume gets the answer (label noise included) an uninterrupted run gave it. Two more points
re-ask items at positions in a call that differ from the uninterrupted run's: ``torn`` (the
journal write of a call is cut after half its lines: the rest of that call is asked again,
alone) and ``answered`` with ``oracle.batch_size`` (a later call of the round is answered,
then lost; the resume asks it with another batch size). There the noisy answers (the shards'
``rewards``, the journals' rows) must still equal the uninterrupted run's, and the oracle's
log must show exactly the lost items asked twice.

The default suite kills each surrogate kind once mid-query after a complete round (so the
resumed run must continue from the loaded checkpoint exactly), UCB at every point in one
chain, and UCB at the two re-asking points; ``-m slow`` runs the whole chain and the
re-asking points for every kind.

Each run is a separate process forked from a multiprocessing fork server that has imported
torch, diffusers and the loop once (a fresh interpreter would spend ~4 s of every run on
imports); the loop inside it is the entry point's ``main`` and dies by SIGKILL like any
process. ``tests/online/test_loop.py`` kills the script started from a fresh interpreter.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import sys
import time
from pathlib import Path

import pytest
from safetensors import safe_open

from online.run_directory import complete_rounds
from online.storage import AnswerJournal
from tests.online.online_helpers import LOGGING_ORACLE, REPO, loop_argv

ROUNDS = 3
FULL_CHAIN = ("sampled:1", "shard:1", "checkpoint:1", "query:2")


PRELOAD = ["torch", "diffusers", "transformers", "accelerate", "botorch", "online.loop", "online.online_main_smc"]
_CONTEXT = None


def _context():
    """The fork server (started once, with one thread per process, as the runs compare bit for bit)."""
    global _CONTEXT
    if _CONTEXT is None:
        _CONTEXT = multiprocessing.get_context("forkserver")
        _CONTEXT.set_forkserver_preload(PRELOAD)
        saved = {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
        os.environ.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
        try:
            multiprocessing.forkserver.ensure_running()  # the server inherits this environment
        finally:
            for key, value in saved.items():
                os.environ.pop(key) if value is None else os.environ.__setitem__(key, value)
    return _CONTEXT


def _loop_process(argv: list[str], crash_at: str | None, oracle_delay_s: float, output: str) -> None:
    """One run of the loop in a forked process: its output to a file, its status as the exit code."""
    fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.environ.pop("DAS_ONLINE_CRASH_AT", None)
    if crash_at:
        os.environ["DAS_ONLINE_CRASH_AT"] = crash_at
    os.environ["ORACLE_DELAY_S"] = str(oracle_delay_s)
    os.chdir(REPO)
    import torch

    torch.set_num_threads(1)
    from online.online_main_smc import main

    status = main(argv)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


class Run:
    """A finished (or running) loop process: ``returncode`` (negative: killed by that signal), ``output``."""

    def __init__(self, process, output: Path):
        self.process, self.output_path = process, output

    def wait(self, timeout: float = 300) -> Run:
        self.process.join(timeout)
        assert self.process.exitcode is not None, "the loop did not finish in time"
        return self

    @property
    def returncode(self) -> int:
        return self.process.exitcode

    @property
    def output(self) -> str:
        return self.output_path.read_text(errors="replace")


_RUNS = iter(range(10**6))


def launch(argv: list[str], crash_at: str | None = None, wait: bool = True, oracle_delay_s: float = 0.0) -> Run:
    output = Path(next(a for a in argv if a.startswith("--config.output_dir=")).split("=", 1)[1]).parent
    output = output / f"process_{next(_RUNS)}.out"
    process = _context().Process(target=_loop_process, args=(argv, crash_at, oracle_delay_s, str(output)))
    process.start()
    run = Run(process, output)
    return run.wait() if wait else run


def oracle(tmp_path: Path, name: str) -> tuple[tuple[str, ...], Path]:
    """The logging oracle; it sleeps ``$ORACLE_DELAY_S`` seconds after answering."""
    script = tmp_path / f"{name}.py"
    script.write_text(LOGGING_ORACLE + "\nimport os, time\ntime.sleep(float(os.environ.get('ORACLE_DELAY_S', 0)))\n")
    return (sys.executable, str(script), str(tmp_path / f"{name}.log")), tmp_path / f"{name}.log"


def run_files(run_dir: Path) -> dict[str, object]:
    """Everything a run computed: every tensor of every shard and checkpoint, prompts, metrics."""
    out: dict[str, object] = {}
    for path in sorted(run_dir.rglob("*.safetensors")):
        with safe_open(str(path), framework="pt") as handle:
            meta = handle.metadata() or {}
            out[f"{path.relative_to(run_dir)}:meta"] = {k: v for k, v in meta.items() if k != "surrogate_header"}
            for key in handle.keys():
                out[f"{path.relative_to(run_dir)}:{key}"] = handle.get_tensor(key)
    for path in sorted(run_dir.glob("round_*/metrics.json")):
        out[str(path.relative_to(run_dir))] = without_timings(json.loads(path.read_text()))
    return out


def without_timings(tree):
    """Metrics less wall-clock seconds, which no two runs share."""
    if isinstance(tree, dict):
        return {k: without_timings(v) for k, v in tree.items() if k != "seconds"}
    return tree


def assert_same_run(a: Path, b: Path) -> None:
    import torch

    left, right = run_files(a), run_files(b)
    assert sorted(left) == sorted(right)
    for key in left:
        if isinstance(left[key], torch.Tensor):
            assert torch.equal(left[key], right[key]), f"{key} differs after the resume"
        else:
            assert left[key] == right[key], f"{key} differs after the resume"


def kill_and_resume(tiny_model, tmp_path, method: str, crashes: tuple[str, ...], extra: tuple[str, ...] = ()) -> Path:
    """A run killed at each of `crashes` in turn (each start resuming the last), then resumed to the end,
    equals an uninterrupted run with the same `extra` arguments, and asks every item once; returns it."""
    command, log = oracle(tmp_path, "reference")
    reference = launch([*loop_argv(tiny_model, tmp_path / "runs", command, "reference", method, ROUNDS), *extra])
    assert reference.returncode == 0, reference.output[-3000:]

    command, killed_log = oracle(tmp_path, "killed")
    argv = [*loop_argv(tiny_model, tmp_path / "runs", command, "killed", method, ROUNDS), *extra]
    run_dir = tmp_path / "runs" / "killed"
    for i, point in enumerate(crashes):
        step = argv if i == 0 else argv + [f"--config.resume_from={run_dir}"]
        done = launch(step, crash_at=point)
        assert done.returncode == -signal.SIGKILL, f"{point}: {done.output[-3000:]}"
    done = launch(argv + [f"--config.resume_from={run_dir}"])
    assert done.returncode == 0, done.output[-3000:]

    assert complete_rounds(run_dir) == list(range(ROUNDS))
    assert_same_run(tmp_path / "runs" / "reference", run_dir)
    # every kill point lands after the answers it saw were journaled: nothing is asked twice
    assert killed_log.read_text().splitlines() == log.read_text().splitlines()
    assert len(log.read_text().splitlines()) == 4 + 2 * (ROUNDS - 1)
    assert not list(run_dir.rglob(".*.tmp"))
    return run_dir


def assert_same_answers(a: Path, b: Path, rounds: int = ROUNDS) -> None:
    """Every round's journal holds the same rows (noisy ``reward`` and ``true_reward`` included)."""
    for k in range(rounds):
        journal = f"round_{k:04d}/answers.jsonl"
        left, right = AnswerJournal(a / journal).read(), AnswerJournal(b / journal).read()
        assert left == right, f"{journal} differs after the resume"


# (crash point, round size, oracle arguments of the killed process, of the resume)
REASKING = {
    # round 1's one call (2 items) is cut while journaled: item 0 kept, item 1 torn and asked alone
    "torn": ("torn:1", 2, (), ()),
    # round 0 in calls of 2: the second call ([2, 3]) answered, then lost; asked again in one call
    "lost call": ("answered:0:2", 4, ("--config.oracle.batch_size=2",), ("--config.oracle.batch_size=0",)),
}


def kill_mid_call_and_resume(tiny_model, tmp_path, method: str, case: str) -> None:
    """A kill that loses answers the oracle gave: the resume asks those items again, at other
    positions in its calls, and must store what an uninterrupted run stores."""
    point, size, killed_args, resume_args = REASKING[case]
    k = int(point.split(":")[1])
    command, log = oracle(tmp_path, "reference")
    reference = launch(loop_argv(tiny_model, tmp_path / "runs", command, "reference", method, ROUNDS))
    assert reference.returncode == 0, reference.output[-3000:]
    asked = log.read_text().splitlines()

    command, killed_log = oracle(tmp_path, "killed")
    argv = loop_argv(tiny_model, tmp_path / "runs", command, "killed", method, ROUNDS)
    run_dir = tmp_path / "runs" / "killed"
    done = launch(argv + list(killed_args), crash_at=point)
    assert done.returncode == -signal.SIGKILL, done.output[-3000:]
    before = killed_log.read_text().splitlines()
    journaled = AnswerJournal(run_dir / f"round_{k:04d}" / "answers.jsonl").read()
    start = 4 + 2 * (k - 1) if k else 0  # the oracle's log position of the round's first item
    lost = [asked[start + i] for i in range(size) if i < len(before) - start and i not in journaled]
    assert lost and before == asked[: len(before)], "the kill point lost no answer: it tests nothing here"

    done = launch(argv + list(resume_args) + [f"--config.resume_from={run_dir}"])
    assert done.returncode == 0, done.output[-3000:]
    assert complete_rounds(run_dir) == list(range(ROUNDS))
    assert_same_run(tmp_path / "runs" / "reference", run_dir)  # the shards' noisy rewards included
    assert_same_answers(tmp_path / "runs" / "reference", run_dir)
    # exactly the answers lost at the kill were asked again, nothing else
    assert killed_log.read_text().splitlines() == before + lost + asked[len(before) :]
    assert not list(run_dir.rglob(".*.tmp"))


@pytest.mark.parametrize(
    "case",
    # Both cases fail when the label noise is indexed by position in the call; "torn" keeps that power in the
    # default suite, "lost call" runs with -m slow (the suite's 5-minute budget).
    [pytest.param(case, marks=pytest.mark.slow) if case == "lost call" else case for case in sorted(REASKING)],
)
def test_ucb_killed_with_answers_in_flight_stores_the_same_noisy_answers(case, tiny_model, tmp_path):
    kill_mid_call_and_resume(tiny_model, tmp_path, "UCB", case)


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(REASKING))
@pytest.mark.parametrize("method", ["Bootstrap", "GP", "Greedy"])
def test_every_kind_killed_with_answers_in_flight_stores_the_same_noisy_answers(case, method, tiny_model, tmp_path):
    kill_mid_call_and_resume(tiny_model, tmp_path, method, case)


@pytest.mark.parametrize(
    "method",
    # Greedy is the UCB surrogate with the posterior mean since acquisitions left the models: the UCB
    # chain covers its checkpoint, so its own case runs with -m slow only (the suite's 5-minute budget).
    ["Bootstrap", "GP", pytest.param("Greedy", marks=pytest.mark.slow)],
)
def test_killed_mid_query_after_a_complete_round_resumes_exactly(method, tiny_model, tmp_path):
    kill_and_resume(tiny_model, tmp_path, method, ("query:2",))


def test_ucb_killed_at_every_point_resumes_exactly(tiny_model, tmp_path):
    kill_and_resume(tiny_model, tmp_path, "UCB", FULL_CHAIN)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["Bootstrap", "GP", "Greedy"])
def test_every_kind_killed_at_every_point_resumes_exactly(method, tiny_model, tmp_path):
    kill_and_resume(tiny_model, tmp_path, method, FULL_CHAIN)


def test_two_resumers_on_one_directory_make_exactly_one_run(tiny_model, tmp_path):
    command, log = oracle(tmp_path, "slow")
    argv = loop_argv(tiny_model, tmp_path / "runs", command, "shared", "UCB", 2)
    assert launch(argv).returncode == 0
    asked = len(log.read_text().splitlines())
    resume = argv + [f"--config.resume_from={tmp_path / 'runs' / 'shared'}", "--config.loop.num_rounds=3"]
    first = launch(resume, wait=False, oracle_delay_s=3.0)  # busy long enough for the second to meet its lock
    time.sleep(0.5)
    second = launch(resume, wait=False, oracle_delay_s=3.0)
    outputs = [p.wait().output for p in (first, second)]
    codes = sorted(p.returncode for p in (first, second))
    assert codes == [0, 2], outputs
    loser = outputs[[first.returncode, second.returncode].index(2)]
    assert [line for line in loser.splitlines() if line.strip()][-1].startswith("error: The run directory")
    assert "in use by process" in loser
    assert complete_rounds(tmp_path / "runs" / "shared") == [0, 1, 2]
    assert len(log.read_text().splitlines()) == asked + 2  # round 2 paid once
