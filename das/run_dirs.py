"""Directories a run owns: a marker that says so, an exclusive lock, and safe removal.

Both command-line tools (``python -m das`` and ``online/online_main_smc.py``) write into
``<output_dir>/<run_name>``. This module is the only place that decides whether such a
directory may be emptied: it must be a plain child of ``output_dir`` (``run_name`` is a
plain name, no separators, not ``.`` or ``..``), a real directory (not a symlink), and it
must carry this project's marker file ``run.json`` naming the same kind of run. Anything
else is refused with one line, so a typo can never remove a user's files.

A run directory is locked with an OS file lock (``fcntl.flock`` on ``<dir>/.lock``) for
the run's whole life. The lock is released by the kernel when the process ends, however it
ends, so a lock left by a killed process never blocks the next run.

Atomic writes in this project use temporary names ``.<name>.<random>.tmp`` in the target
folder; :func:`clean_temp_files` removes those an interrupted write left behind.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import shutil
import tempfile
import time
from pathlib import Path

MARKER = "run.json"
LOCK = ".lock"
TOOL = "das-toolkit"
TEMP_SUFFIX = ".tmp"
DAS_SAMPLE_KIND = "das-sample"  # the marker kind of python -m das outputs
_PLAIN_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+=@-]*$")


class RunDirError(Exception):
    """A run directory cannot be used as asked (not a run, locked, unreadable); one sentence."""


def check_run_name(name: object, field: str = "run_name") -> None:
    """Raises :class:`RunDirError` unless `name` is a plain, non-empty directory name."""
    if not isinstance(name, str) or not name.strip():
        raise RunDirError(f"{field} is empty; give the run a plain name such as 'ucb-jpeg-1'.")
    if not _PLAIN_NAME.match(name) or len(name) > 200:
        raise RunDirError(
            f"{field} {name!r} is not a plain name; use letters, digits and . _ - + = @ only "
            "(no path separators, no leading dot), at most 200 characters."
        )


def read_marker(path: Path) -> dict | None:
    """The marker of a run directory, or None when `path` holds no readable marker of ours."""
    marker = Path(path) / MARKER
    try:
        if marker.is_symlink() or not marker.is_file() or marker.stat().st_size > 65536:
            return None
        payload = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return payload if isinstance(payload, dict) and payload.get("tool") == TOOL else None


def write_marker(path: Path, kind: str) -> None:
    """Marks `path` as a run of `kind` (written atomically)."""
    payload = {"tool": TOOL, "kind": kind, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "pid": os.getpid()}
    atomic_write_text(Path(path) / MARKER, json.dumps(payload, indent=2) + "\n")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Writes `data` to `path` atomically: a temporary file in the same folder, fsync, rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # the permissions an ordinary open() would give
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def clean_temp_files(root: Path) -> list[Path]:
    """Removes the temporary files of interrupted atomic writes under `root`; returns them.

    Only regular files named ``.<name>.<random>.tmp`` are touched (the names
    :func:`atomic_write_bytes` and the surrogate checkpoint writer use).
    """
    removed = []
    for path in Path(root).rglob(f".*{TEMP_SUFFIX}"):
        if path.is_file() and not path.is_symlink() and path.name.count(".") >= 3:
            path.unlink()
            removed.append(path)
    return removed


class DirectoryLock:
    """An exclusive, non-blocking OS lock on ``<directory>/.lock``, held until :meth:`release`.

    Args:
        directory: the run directory (created if missing).
        what: how the error message names the directory's user ("run", "evaluation").
    """

    def __init__(self, directory: Path, what: str = "run"):
        self.directory = Path(directory)
        self.what = what
        self._handle = None

    def acquire(self) -> DirectoryLock:
        self.directory.mkdir(parents=True, exist_ok=True)
        handle = open(self.directory / LOCK, "a+", encoding="utf-8")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            if error.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise RunDirError(
                    f"The {self.what} directory {str(self.directory)!r} is in use by {holder}; "
                    "wait for it to finish (two writers would pay for the same queries twice)."
                ) from None
            raise
        handle.seek(0)
        handle.truncate()
        handle.write(f"process {os.getpid()}")
        handle.flush()
        self._handle = handle
        return self

    def release(self) -> None:
        if self._handle is not None:
            fcntl.flock(self._handle.fileno(), fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None

    @property
    def held(self) -> bool:
        return self._handle is not None

    def __enter__(self) -> DirectoryLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def check_removable(path: Path, output_dir: Path, kind: str) -> None:
    """Raises :class:`RunDirError` unless `path` may be emptied by an overwrite of a `kind` run."""
    path, output_dir = Path(path), Path(output_dir)
    if path.parent.resolve() != output_dir.resolve() or path.name in ("", ".", ".."):
        raise RunDirError(
            f"Refusing to overwrite {str(path)!r}: it is not a directory directly inside {str(output_dir)!r}."
        )
    if path.is_symlink() or not path.is_dir():
        raise RunDirError(
            f"Refusing to overwrite {str(path)!r}: it is not a directory (a file or a link); move it away yourself."
        )
    marker = read_marker(path)
    if marker is None:
        raise RunDirError(
            f"Refusing to overwrite {str(path)!r}: it holds no {MARKER} marker of this project, so it is not a run "
            "this tool made; move it away yourself or choose another run_name."
        )
    if marker.get("kind") != kind:
        raise RunDirError(
            f"Refusing to overwrite {str(path)!r}: it is a {marker.get('kind')!r} run, not a {kind!r} one; "
            "choose another run_name."
        )


class RunPlace:
    """Where a new run writes, ``<output_dir>/<run_name>``, and whether it may be used as asked.

    Both tools check their run directory with it before anything is built (the online
    loop's :class:`online.run_directory.RunDirectory` for a new run, ``python -m das``).

    Args:
        output_dir: the folder the run directory sits directly in, as configured.
        run_name: the directory's name as configured (checked to be a plain name).
        kind: the marker kind an existing directory must carry to be overwritten.
        what: how messages name the directory's user (``"run"``, ``"evaluation"``).
        example: an ``output_dir`` the message for an empty one suggests.
        hint: said first when the directory exists (e.g. how to resume it instead).
        reuse_empty: whether an existing empty directory is used as it is (else it needs
            ``overwrite`` like any other).
    """

    def __init__(self, output_dir, run_name, kind: str, *, what="run", example="runs", hint="", reuse_empty=True):
        self.output_dir_given = str(output_dir)
        self.output_dir = Path(output_dir)
        self.run_name = run_name
        self.path = self.output_dir / str(run_name)
        self.kind, self.what, self.example, self.hint = kind, what, example, hint
        self.reuse_empty = reuse_empty

    def check(self, overwrite: bool) -> None:
        """Raises :class:`RunDirError` unless the directory can be used as asked; creates nothing."""
        check_run_name(self.run_name, "run_name")  # the name as given: '' or '../x' must not pass
        if not self.output_dir_given.strip():
            raise RunDirError(f"output_dir is empty; set --config.output_dir to a folder such as {self.example}.")
        check_output_dir(self.output_dir)
        if self.path.is_symlink() or (self.path.exists() and not self.path.is_dir()):
            raise RunDirError(f"{str(self.path)!r} exists and is not a directory; choose another run_name.")
        if not self.path.exists() or (self.reuse_empty and not has_content(self.path)):
            return
        if not overwrite:
            raise RunDirError(
                f"The {self.what} directory {str(self.path)!r} already exists; "
                f"{self.hint}choose another --config.run_name, or pass --config.overwrite=True."
            )
        check_removable(self.path, self.output_dir, self.kind)


def has_content(path: Path) -> bool:
    """Whether `path` holds anything but its lock file."""
    return any(child.name != LOCK for child in Path(path).iterdir())


def check_output_dir(output_dir: Path) -> None:
    """Raises :class:`RunDirError` unless `output_dir` exists as a writable folder or can be created."""
    probe = Path(output_dir)
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        raise RunDirError(f"output_dir {str(output_dir)!r} cannot be created: {str(probe)!r} is a file, not a folder.")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise RunDirError(
            f"output_dir {str(output_dir)!r} is not writable ({str(probe)!r} is read-only); choose another folder."
        )


def write_run_directory(run_dir: Path, fill, kind: str) -> None:
    """Calls ``fill(tmp)`` on a temporary sibling of `run_dir`, marks it as a `kind` run, then swaps it into place.

    An earlier output there (validated before: a `kind` run, with overwrite=True) is
    renamed aside first and deleted last, so a crash never loses both.
    """
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{run_dir.name}.", suffix=".tmp", dir=run_dir.parent))
    try:
        fill(tmp)
        write_marker(tmp, kind)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # the temporary folder is ours; the old outputs are untouched
        raise
    if run_dir.exists() or run_dir.is_symlink():
        check_removable(run_dir, run_dir.parent, kind)
        old = Path(tempfile.mkdtemp(prefix=f".{run_dir.name}.old.", suffix=".tmp", dir=run_dir.parent))
        os.replace(run_dir, old / "run")  # swap first, delete after
        os.replace(tmp, run_dir)
        shutil.rmtree(old)
    else:
        os.replace(tmp, run_dir)


def empty_run_directory(path: Path, output_dir: Path, kind: str) -> None:
    """Removes everything inside a recognized run directory except its lock file.

    The caller holds the directory's lock; :func:`check_removable` is applied first.
    """
    check_removable(path, output_dir, kind)
    for child in Path(path).iterdir():
        if child.name == LOCK:
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


__all__ = [
    "DAS_SAMPLE_KIND",
    "LOCK",
    "MARKER",
    "DirectoryLock",
    "RunDirError",
    "RunPlace",
    "atomic_write_bytes",
    "atomic_write_text",
    "check_output_dir",
    "check_removable",
    "check_run_name",
    "clean_temp_files",
    "empty_run_directory",
    "has_content",
    "read_marker",
    "write_run_directory",
    "write_marker",
]
