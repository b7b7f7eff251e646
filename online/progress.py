"""Progress of a run, for people and for logs: a bar where a terminal is attached, one plain line per round otherwise.

The estimate of the time left is the last guided round's time, times the rounds left: round 0
(pretrained samples, no surrogate guidance) is far cheaper than a guided round, so an average
that includes it promises too early an end. Before the first guided round is done there is no
estimate.
"""

from __future__ import annotations

import sys
from typing import TextIO

from tqdm.auto import tqdm


def duration(seconds: float) -> str:
    """``seconds`` as ``"2 min 05 s"`` or ``"42 s"``."""
    seconds = max(0, round(seconds))
    minutes, rest = divmod(seconds, 60)
    return f"{minutes} min {rest:02d} s" if minutes else f"{rest} s"


def time_left(k: int, total: int, row: dict) -> float | None:
    """Seconds left after round `k` of `total` (0-based): the rounds left times round `k`'s time, from the
    first guided round (``k >= 1``) on; None before."""
    seconds = (row.get("seconds") or {}).get("total")
    if k < 1 or seconds is None:
        return None
    return (total - k - 1) * float(seconds)


def round_line(k: int, total: int, row: dict) -> str:
    """One line about a finished round: its true (or observed) reward, queries, time and the time left."""
    reward = row.get("true_reward") or row.get("observed_reward") or {}
    mean = reward.get("mean")
    score = "no answer" if mean is None else f"true reward {mean:.4g}"
    seconds = (row.get("seconds") or {}).get("total")
    took = "" if seconds is None else f" in {duration(seconds)}"
    left = time_left(k, total, row)
    tail = "done" if k == total - 1 else ("" if left is None else f"about {duration(left)} left")
    queries = row.get("queries_total")
    spent = "" if queries is None else f", {queries} queries so far"
    return f"round {k}/{total - 1}: {score}{spent}{took}" + (f"; {tail}" if tail else "")


def bars_wanted(progress: bool, main: bool) -> bool:
    """Whether to draw progress bars: asked for (``progress``), on the main process, and on a terminal
    (in a log file a bar's redraws are noise; the loop writes one line per round there instead)."""
    return progress and main and sys.stderr.isatty()


class RoundProgress:
    """Reports rounds `first` .. `total − 1` of a run on the main process (``enabled``); a bar when
    ``bar`` is asked for and `stream` is a terminal, else one line per round on standard output."""

    def __init__(self, first: int, total: int, enabled: bool, bar: bool, stream: TextIO | None = None) -> None:
        stream = stream if stream is not None else sys.stderr
        self.total, self.enabled = total, enabled
        self.bar = None
        if enabled and bar and stream.isatty():
            self.bar = tqdm(
                total=total,
                initial=first,
                desc="rounds",
                file=stream,
                bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]",
            )

    def done(self, k: int, row: dict | None) -> None:
        """Round `k` is complete (`row`: its metrics; None off the main process)."""
        if not self.enabled or row is None:
            return
        if self.bar is None:
            print(round_line(k, self.total, row), flush=True)
            return
        left = time_left(k, self.total, row)
        postfix = {"true_mean": f"{(row.get('true_reward') or {}).get('mean', float('nan')):.3f}"}
        if left is not None:
            postfix["left"] = duration(left)
        self.bar.set_postfix(postfix, refresh=False)
        self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


__all__ = ["RoundProgress", "bars_wanted", "duration", "round_line", "time_left"]
