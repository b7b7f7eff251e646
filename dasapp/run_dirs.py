"""Directories a run owns: a marker that says so, an exclusive lock, and safe removal.

Both command-line tools (``python -m das`` and ``online/online_main_smc.py``) write into
``<output_dir>/<run_name>``. This module is the only place that decides whether such a
directory may be emptied: it must be a plain child of ``output_dir`` (``run_name`` is a
plain name, no separators, not ``.`` or ``..``), a real directory (not a symlink), and it
must carry this project's marker file ``run.json`` naming the same kind of run, and hold
no other run inside it. Anything else is refused with one line, so a typo can never remove
a user's files. A folder counts as a run only through that marker, never because a
``config.json`` is there. A new run may not be placed inside another run, whether directly
or through a link (:func:`enclosing_run`), so overwriting one run never deletes another.

An overwrite never empties the old run in place: the new run is created (and locked) first,
then the old one is renamed aside (:func:`move_aside`) and deleted only once the new one is
in its place (:func:`remove_aside`).

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

from atomicfile import TEMP_SUFFIX, atomic_write_bytes, atomic_write_text, process_umask
from dasapp.stopping import deferred

MARKER = "run.json"
LOCK = ".lock"
TOOL = "das-toolkit"
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
        filename: the lock file's name in `directory` (``python -m das`` locks a run name with
            ``.<run_name>.lock`` beside the run directory, see :func:`lock_run_name`).
    """

    def __init__(self, directory: Path, what: str = "run", filename: str = LOCK):
        self.directory = Path(directory)
        self.what = what
        self.filename = filename
        self._handle = None

    def acquire(self) -> DirectoryLock:
        self.directory.mkdir(parents=True, exist_ok=True)
        handle = open(self.directory / self.filename, "a+", encoding="utf-8")
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
    check_marked_run(
        path, kind, f"Refusing to overwrite {str(path)!r}", "move it away yourself or choose another run_name"
    )
    inner = nested_run(path)
    if inner is not None:
        raise RunDirError(
            f"Refusing to overwrite {str(path)!r}: another run lies inside it ({str(inner)!r}); "
            "move that run out first or choose another run_name."
        )


def check_marked_run(path: Path, kind: str, refusal: str, fix: str, what: str = "run") -> None:
    """Raises :class:`RunDirError` unless `path` is a real directory carrying this tool's marker of `kind`.

    The one test of "is this a run of ours" (never a ``config.json`` alone); `refusal` starts the
    message (e.g. ``"Cannot resume from '…'"``), `fix` ends it, `what` names such a directory.
    """
    path = Path(path)
    if path.is_symlink() or not path.is_dir():
        raise RunDirError(f"{refusal}: it is not a directory (a file, a link or nothing); {fix}.")
    marker = read_marker(path)
    if marker is None:
        raise RunDirError(
            f"{refusal}: it holds no {MARKER} marker of this tool, so it is not a {what} this tool made "
            f"(a copied config.json is not enough); {fix}."
        )
    if marker.get("kind") != kind:
        raise RunDirError(f"{refusal}: it is a {marker.get('kind')!r} directory, not a {kind!r} one; {fix}.")


def enclosing_run(path: Path) -> Path | None:
    """The run directory of this project that `path` lies in (or is), directly or through links; else None.

    Both the path as given and the path with every link resolved are walked up to the root, so
    a folder reached through a link into a run counts as inside it, and so does a link inside a
    run that leads out of it.
    """
    given = Path(os.path.abspath(path))
    for start in (given, given.resolve()):
        for folder in (start, *start.parents):
            if read_marker(folder) is not None:
                return folder
    return None


def nested_run(path: Path) -> Path | None:
    """A run directory of this project strictly inside `path` (links are not followed), or None."""
    for folder, subfolders, files in os.walk(path, followlinks=False):
        if Path(folder) != Path(path) and MARKER in files and read_marker(Path(folder)) is not None:
            return Path(folder)
        subfolders[:] = [name for name in subfolders if not (Path(folder) / name).is_symlink()]
    return None


ASIDE_INFIX = ".old."


def move_aside(path: Path, output_dir: Path, kind: str) -> Path:
    """Renames a recognized `kind` run out of the way before an overwrite; returns the folder holding it.

    The run ends up as ``<output_dir>/.<name>.old.<random>.tmp/run``; nothing is deleted here.
    :func:`remove_aside` deletes it once its replacement is in place.
    """
    check_removable(path, output_dir, kind)
    path = Path(path)
    aside = make_sibling_folder(path, ASIDE_INFIX)
    os.replace(path, aside / "run")
    return aside


def remove_aside(aside: Path, kind: str) -> None:
    """Deletes a folder made by :func:`move_aside`, after checking it holds a `kind` run and nothing else."""
    aside = Path(aside)
    if not aside.name.startswith(".") or ASIDE_INFIX not in aside.name or not aside.name.endswith(TEMP_SUFFIX):
        raise RunDirError(f"Refusing to delete {str(aside)!r}: it is not a folder this tool set aside.")
    children = [child.name for child in aside.iterdir()]
    marker = read_marker(aside / "run")
    if children != ["run"] or marker is None or marker.get("kind") != kind:
        raise RunDirError(f"Refusing to delete {str(aside)!r}: it does not hold exactly one {kind!r} run.")
    shutil.rmtree(aside)


def set_aside_runs(path: Path, kind: str) -> list[Path]:
    """Folders :func:`move_aside` made for the run name of `path` that still hold a `kind` run."""
    path = Path(path)
    found = []
    for aside in sorted(path.parent.glob(f".{glob_escape(path.name)}{ASIDE_INFIX}*{TEMP_SUFFIX}")):
        marker = read_marker(aside / "run") if aside.is_dir() and not aside.is_symlink() else None
        if marker is not None and marker.get("kind") == kind:
            found.append(aside)
    return found


def glob_escape(name: str) -> str:
    """`name` with glob's special characters matched literally."""
    return "".join(f"[{c}]" if c in "*?[" else c for c in name)


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
        inside = enclosing_run(self.output_dir)
        if inside is not None:
            raise RunDirError(
                f"output_dir {self.output_dir_given!r} lies inside the run directory {str(inside)!r} "
                "(directly or through a link); choose an output_dir outside every run."
            )
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


def make_sibling_folder(path: Path, infix: str) -> Path:
    """A new folder ``.<name><infix><random>.tmp`` beside `path`, with an ordinary folder's permissions
    (``0777`` less the umask; ``mkdtemp``'s ``0700`` would hide a run from everyone but its writer)."""
    path = Path(path)
    folder = Path(tempfile.mkdtemp(prefix=f".{path.name}{infix}", suffix=TEMP_SUFFIX, dir=path.parent))
    os.chmod(folder, 0o777 & ~process_umask())
    return folder


def write_run_directory(run_dir: Path, fill, kind: str, overwrite: bool = False) -> None:
    """Calls ``fill(tmp)`` on a temporary sibling of `run_dir`, marks it as a `kind` run, then swaps it into place.

    The temporary sibling is ``.<run_name>.<random>.tmp``. Right before the swap the place is
    checked again: an existing `run_dir` is replaced only with `overwrite` and only when it is a
    `kind` run (:func:`check_removable`); it is renamed aside first (:func:`move_aside`) and
    deleted last, so a crash never loses both. Otherwise the new outputs are discarded with a
    :class:`RunDirError` and nothing is overwritten. The caller holds :func:`lock_run_name`.
    """
    run_dir = Path(run_dir)
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = make_sibling_folder(run_dir, ".")
    aside = None
    try:
        fill(tmp)
        write_marker(tmp, kind)
        if (run_dir.exists() or run_dir.is_symlink()) and not overwrite:
            raise RunDirError(
                f"The run directory {str(run_dir)!r} appeared while this run was working; nothing was "
                "overwritten and this run's outputs were discarded; choose another --config.run_name, or pass "
                "--config.overwrite=True."
            )
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # the temporary folder is ours; the old outputs are untouched
        raise
    with deferred():  # a stop never lands between the two renames of the swap
        if run_dir.exists() or run_dir.is_symlink():
            aside = move_aside(run_dir, run_dir.parent, kind)  # swap first, delete after
        os.replace(tmp, run_dir)
    if aside is not None:
        remove_aside(aside, kind)


RUN_NAME_LOCK = ".{}.lock"  # python -m das: the lock of <output_dir>/<run_name>, beside it
_LOCK_CONTENT = re.compile(r"^(process \d+)?$")
_RANDOM = r"[a-z0-9_]{8}"  # tempfile.mkdtemp's random part


def lock_run_name(output_dir: Path, run_name: str) -> DirectoryLock:
    """Takes the exclusive lock of ``<output_dir>/<run_name>`` for a run that creates it only at its end.

    The lock file is ``<output_dir>/.<run_name>.lock`` (the run directory itself does not
    exist until :func:`write_run_directory` swaps it in). It is left in place after the run; the
    kernel releases the lock when the holder ends, however it ends.

    Raises:
        RunDirError: another process holds it, or a file of the user's is in the lock file's place.
    """
    path = Path(output_dir) / RUN_NAME_LOCK.format(run_name)
    if path.is_symlink() or (path.exists() and not _is_lock_file(path)):
        raise RunDirError(
            f"{str(path)!r} is in the way of this run's lock file (it is not a lock file of this tool); move it away "
            "or choose another --config.run_name."
        )
    try:
        return DirectoryLock(output_dir, "run", filename=path.name).acquire()
    except RunDirError:
        holder = path.read_text(encoding="utf-8", errors="replace").strip() or "another process"
        raise RunDirError(
            f"The run {run_name!r} in {str(output_dir)!r} is being made by {holder}; wait for it to finish, "
            "or choose another --config.run_name."
        ) from None


def _is_lock_file(path: Path) -> bool:
    """Whether `path` is a regular file holding what :class:`DirectoryLock` writes (or nothing)."""
    try:
        if not path.is_file() or path.stat().st_size > 64:
            return False
        return bool(_LOCK_CONTENT.match(path.read_text(encoding="utf-8").strip()))
    except (OSError, UnicodeDecodeError):
        return False


def clean_run_leftovers(run_dir: Path, kind: str) -> list[Path]:
    """Tidies what a killed :func:`write_run_directory` left beside `run_dir`; returns what it removed.

    The caller holds :func:`lock_run_name`, so no live writer of this run name owns these. Only
    real folders (not links) named exactly ``.<run_name>.<random>.tmp`` (outputs being written)
    or ``.<run_name>.old.<random>.tmp`` (earlier outputs set aside) are touched. When the kill
    came between the two renames (`run_dir` missing, earlier `kind` outputs set aside), those
    earlier outputs are put back in place rather than deleted.
    """
    run_dir = Path(run_dir)
    name = re.escape(run_dir.name)
    temp = re.compile(rf"^\.{name}\.{_RANDOM}\.tmp$")
    old = re.compile(rf"^\.{name}\.old\.{_RANDOM}\.tmp$")
    removed = []
    for aside in (a for a in set_aside_runs(run_dir, kind) if old.match(a.name)):
        if not run_dir.exists() and not run_dir.is_symlink():
            os.replace(aside / "run", run_dir)  # the earlier outputs, back where the killed swap took them from
            os.rmdir(aside)
        else:
            remove_aside(aside, kind)
        removed.append(aside)
    for folder in sorted(run_dir.parent.iterdir()) if run_dir.parent.is_dir() else []:
        if folder.is_symlink() or not folder.is_dir():
            continue
        children = [child.name for child in folder.iterdir()]
        if old.match(folder.name) and not children:  # set aside before the earlier outputs were moved in
            os.rmdir(folder)
            removed.append(folder)
        elif temp.match(folder.name) and children != ["run"]:  # ["run"]: the run '<name>.old's aside, not ours
            shutil.rmtree(folder)
            removed.append(folder)
    return removed


__all__ = [
    "DAS_SAMPLE_KIND",
    "LOCK",
    "MARKER",
    "DirectoryLock",
    "RunDirError",
    "RunPlace",
    "atomic_write_bytes",
    "atomic_write_text",
    "process_umask",
    "check_output_dir",
    "check_marked_run",
    "check_removable",
    "check_run_name",
    "clean_run_leftovers",
    "clean_temp_files",
    "enclosing_run",
    "move_aside",
    "nested_run",
    "remove_aside",
    "set_aside_runs",
    "has_content",
    "lock_run_name",
    "make_sibling_folder",
    "read_marker",
    "write_run_directory",
    "write_marker",
]
