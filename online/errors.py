"""The errors the online tools end with, and how the entry point prints them.

Exit status 2: bad input, found before anything is created or paid for (a config mistake,
a run directory that cannot be used, a checkpoint or shard that is corrupt or unsafe,
weights or extras that are missing, a run locked by another process).
Exit status 1: the run failed while working (a filesystem error such as a full disk, an
oracle that answered nothing, a sampled batch that is not finite). Either way one line on
standard error, naming the path or field and the fix; every answer already paid for is on
disk, and a resume continues from there.
"""

from __future__ import annotations


class RunError(RuntimeError):
    """The run cannot go on; the message is one sentence saying why and what to do."""


def describe_os_error(error: OSError) -> str:
    """One line for a filesystem error: what failed, on which path."""
    what = error.strerror or type(error).__name__
    path = error.filename if error.filename is not None else ""
    target = f" ({path!s})" if path else ""
    return f"{what}{target}; nothing already answered is lost: free the space or fix the path, then resume the run."
