"""The project's one atomic file writer: a reader sees the old content or the new, never half.

``atomic_write_bytes(path, data)`` writes to a temporary file ``.<name>.<random>.tmp`` in the
target folder, fsyncs it, gives it the permissions an ordinary ``open()`` would (``0666`` less
the process umask, read without changing it: ``os.umask`` would race other threads), and
renames it over `path`. A crash leaves at most such a temporary file, which the run directory
code removes on the next start. It imports nothing of the project, so every package may use it
(the surrogate checkpoints, the run directories, the online loop's files).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

TEMP_SUFFIX = ".tmp"


def process_umask() -> int:
    """The process umask, read from ``/proc/self/status`` without changing it (``0o022`` where that is absent)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return 0o022  # the usual default


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Writes `data` to `path` atomically (temporary file in the same folder, fsync, rename); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~process_umask())  # the permissions an ordinary open() would give
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """:func:`atomic_write_bytes` of `text` in UTF-8."""
    return atomic_write_bytes(path, text.encode("utf-8"))


__all__ = ["TEMP_SUFFIX", "atomic_write_bytes", "atomic_write_text", "process_umask"]
