"""Crash points for the kill/resume tests: the loop dies at a named point when asked to.

Set ``DAS_ONLINE_CRASH_AT=<point>:<round>`` and the loop kills its own process with SIGKILL
when it reaches that point of that round (no cleanup, no ``finally``: what a power cut or
the OOM killer does). Points: ``sampled`` (the batch is sampled, nothing of the round is on
disk), ``query`` (the first answer of the round is journaled), ``shard`` (the dataset shard
is written), ``checkpoint`` (the surrogate file is written, the round's other files are
not). Unset, every call is a dictionary-free string comparison and nothing else.
"""

from __future__ import annotations

import os
import signal

ENV = "DAS_ONLINE_CRASH_AT"
POINTS = ("sampled", "query", "shard", "checkpoint")


def crash_point(point: str, round_index: int) -> None:
    """SIGKILLs this process if ``DAS_ONLINE_CRASH_AT`` names `point` of round `round_index`."""
    wanted = os.environ.get(ENV)
    if wanted and wanted == f"{point}:{round_index}":
        os.kill(os.getpid(), signal.SIGKILL)
