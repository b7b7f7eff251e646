"""Crash points for the kill/resume tests: the loop dies at a named point when asked to.

Set ``DAS_ONLINE_CRASH_AT=<point>:<round>`` (or ``<point>:<round>:<n>``: the `n`-th time the
point is reached in that round, counting from 1) and the loop kills its own process with
SIGKILL there (no cleanup, no ``finally``: what a power cut or the OOM killer does). Points:

* ``sampled``: the batch is sampled, nothing of the round is on disk;
* ``answered``: an oracle call has answered, its answers are not journaled yet (that call is
  lost and its items are asked again on resume: with ``oracle.batch_size`` the earlier calls
  of the round are journaled, the one in flight is not);
* ``torn``: a call's answers are being journaled and the write is cut: the first half of its
  lines is on disk, then part of the next line (a torn line); the rest is asked again;
* ``query``: the answers of an oracle call are journaled (``query:<k>`` is the first call);
* ``shard``: the dataset shard is written;
* ``checkpoint``: the surrogate file is written, the round's other files are not.

Unset, every call is one environment lookup and nothing else.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Callable

ENV = "DAS_ONLINE_CRASH_AT"
POINTS = ("sampled", "answered", "torn", "query", "shard", "checkpoint")
_REACHED: dict[str, int] = {}  # how often each point of each round was reached in this process


def crash_point(point: str, round_index: int, before_kill: Callable[[], None] | None = None) -> None:
    """SIGKILLs this process if ``DAS_ONLINE_CRASH_AT`` names `point` of round `round_index`
    (and this is the wanted occurrence), after calling `before_kill` (a torn write)."""
    wanted = os.environ.get(ENV)
    if not wanted or not _wants(wanted, point, round_index):
        return
    if before_kill is not None:
        before_kill()
    os.kill(os.getpid(), signal.SIGKILL)


def _wants(wanted: str, point: str, round_index: int) -> bool:
    name, _, rest = wanted.partition(":")
    round_text, _, nth = rest.partition(":")
    if name != point or round_text != str(round_index):
        return False
    key = f"{point}:{round_index}"
    _REACHED[key] = _REACHED.get(key, 0) + 1
    return _REACHED[key] == int(nth or 1)


def write_torn(path: os.PathLike, rows: list[dict], append: Callable[[list[dict]], None]) -> None:
    """What a write cut short leaves in a journal: the first half of `rows` appended whole
    (by `append`), then the first half of the next row's line with no newline, fsynced."""
    half = len(rows) // 2
    if half:
        append(rows[:half])
    line = json.dumps(rows[half])
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(line[: len(line) // 2])
        handle.flush()
        os.fsync(handle.fileno())
