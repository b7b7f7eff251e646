"""Clean stops of the command-line tools on SIGINT (Ctrl-C) and SIGTERM.

Inside :func:`stop_on_signals` either signal raises :class:`Stopped` in the main thread, at
the point where it is working or waiting, so every ``finally`` on the way out runs: locks
are released, an external command's process group is killed, a web server is shut down.
:class:`Stopped` is a ``BaseException``, so code that handles ``Exception`` (an oracle's
fault policy, a report writer) cannot swallow it. The entry point catches it, prints one
line and exits with ``128 + signal`` (130 for SIGINT, 143 for SIGTERM).

A block that must not be cut in half (appending a paid answer to its journal) runs inside
:func:`deferred`: a signal that arrives there takes effect when the block ends. Once a stop
is under way, further signals are ignored so the cleanup can finish (it is short: killing a
process group, closing a server).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Stopped(BaseException):
    """The process was asked to stop by `signal_number` (SIGINT or SIGTERM)."""

    def __init__(self, signal_number: int):
        self.signal_number = int(signal_number)
        super().__init__(f"stopped by {self.name}")

    @property
    def name(self) -> str:
        """The signal's name, e.g. ``"SIGTERM"``."""
        try:
            return signal.Signals(self.signal_number).name
        except ValueError:
            return f"signal {self.signal_number}"

    @property
    def exit_status(self) -> int:
        """The shell's convention for a process ended by a signal: 130 (SIGINT), 143 (SIGTERM)."""
        return 128 + self.signal_number


class _State:
    installed = False
    depth = 0  # nesting of deferred() blocks on the main thread
    pending: int | None = None  # a signal that arrived inside a deferred() block
    stopping = False  # a Stopped was raised: later signals are ignored


_STATE = _State()


def _on_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _handler(signal_number: int, frame) -> None:
    if _STATE.stopping:
        return
    if _STATE.depth:
        _STATE.pending = signal_number
        return
    _STATE.stopping = True
    raise Stopped(signal_number)


@contextlib.contextmanager
def stop_on_signals(signals: tuple[int, ...] = SIGNALS) -> Iterator[None]:
    """While the block runs, `signals` raise :class:`Stopped` in the main thread.

    The previous handlers come back when the block ends. Off the main thread (where Python
    cannot install handlers) this does nothing.
    """
    if not _on_main_thread() or _STATE.installed:
        yield
        return
    previous = {number: signal.signal(number, _handler) for number in signals}
    _STATE.installed, _STATE.depth, _STATE.pending, _STATE.stopping = True, 0, None, False
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
        _STATE.installed, _STATE.depth, _STATE.pending, _STATE.stopping = False, 0, None, False


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """A stop requested while the block runs (on the main thread) is raised when it ends."""
    if not _on_main_thread():
        yield
        return
    _STATE.depth += 1
    try:
        yield
    finally:
        _STATE.depth -= 1
        if not _STATE.depth and _STATE.pending is not None and not _STATE.stopping:
            number, _STATE.pending, _STATE.stopping = _STATE.pending, None, True
            raise Stopped(number)


__all__ = ["SIGNALS", "Stopped", "deferred", "stop_on_signals"]
