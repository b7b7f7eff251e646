"""The run directory of the online loop (or of an evaluation): where it is, whether it may be
created, overwritten or resumed, its lock, and the check of its files before a resume.

Only this module creates, empties or locks a run directory (through :mod:`das.run_dirs`,
which refuses to empty anything that is not a run of the same kind). The order of events
is what keeps data safe:

1. :meth:`RunDirectory.check` (pure, at validation): the name is plain, the place is
   usable, an existing directory is either resumable or, with ``overwrite``, a recognized
   run of this kind; nothing is created.
2. :meth:`RunDirectory.lock` before any model is built when the directory exists (a
   resume, an overwrite), else right after the models are built; a second writer stops
   here with one line.
3. :meth:`RunDirectory.create` (a new run, or an overwrite, after every model has been
   built) or :meth:`RunDirectory.verify_for_resume` (a resume: every shard and checkpoint
   of the run is read and checked before any new query).
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

import torch

from das.run_dirs import (
    LOCK,
    MARKER,
    DirectoryLock,
    RunDirError,
    atomic_write_text,
    check_removable,
    check_run_name,
    clean_temp_files,
    empty_run_directory,
    read_marker,
    write_marker,
)
from online.storage import complete_rounds, data_shard, load_rows, round_dir

TRAIN_KIND = "online-train"
EVALUATE_KIND = "online-evaluate"
SHARD_FIELDS = ("features", "rewards", "true_rewards", "valid", "images")
BATCH_FIELDS = ("images", "features")


class RunDirectory:
    """A training run or evaluation directory ``<output_dir>/<run_name>`` (or ``resume_from``).

    Args:
        path: the directory.
        output_dir: the folder it must sit directly in (None for a resumed run, whose path
            is given as is).
        kind: :data:`TRAIN_KIND` or :data:`EVALUATE_KIND`.
    """

    def __init__(self, path: Path, output_dir: Path | str | None, kind: str, run_name: str | None = None):
        self.run_name = run_name
        self.output_dir_given = "" if output_dir is None else str(output_dir)
        self.path = Path(path)
        self.output_dir = None if output_dir is None else Path(output_dir)
        self.kind = kind
        self._lock = DirectoryLock(self.path, "run" if kind == TRAIN_KIND else "evaluation")

    @classmethod
    def for_config(cls, config) -> RunDirectory:
        if config.resume_from and config.mode != "evaluate":
            return cls(Path(config.resume_from), None, TRAIN_KIND)
        kind = EVALUATE_KIND if config.mode == "evaluate" else TRAIN_KIND
        return cls(Path(config.output_dir) / str(config.run_name), config.output_dir, kind, config.run_name)

    @property
    def resuming(self) -> bool:
        return self.output_dir is None

    # ------------------------------------------------------------------ validation (pure)
    def check(self, overwrite: bool) -> None:
        """Raises :class:`RunDirError` unless this directory can be used as asked; creates nothing."""
        if self.resuming:
            self._check_resumable()
            return
        check_run_name(self.run_name, "run_name")  # the name as given: '' or '../x' must not pass
        if not self.output_dir_given.strip():
            raise RunDirError("output_dir is empty; set --config.output_dir to a folder such as runs.")
        _check_output_dir(self.output_dir)
        if self.path.is_symlink() or (self.path.exists() and not self.path.is_dir()):
            raise RunDirError(f"{str(self.path)!r} exists and is not a directory; choose another run_name.")
        if not self.path.exists() or not _has_content(self.path):
            return
        if not overwrite:
            hint = f"resume it with --config.resume_from={self.path}, " if self.kind == TRAIN_KIND else ""
            raise RunDirError(
                f"The {'run' if self.kind == TRAIN_KIND else 'evaluation'} directory {str(self.path)!r} "
                "already exists; "
                f"{hint}choose another --config.run_name, or pass --config.overwrite=True."
            )
        check_removable(self.path, self.output_dir, self.kind)

    def _check_resumable(self) -> None:
        if self.path.is_symlink() or not self.path.is_dir():
            raise RunDirError(
                f"Cannot resume from {str(self.path)!r}: it is not a run directory; check --config.resume_from."
            )
        marker = read_marker(self.path)
        if marker is not None and marker.get("kind") != TRAIN_KIND:
            raise RunDirError(
                f"Cannot resume from {str(self.path)!r}: it is a {marker.get('kind')!r} directory, not a training run."
            )
        if not (self.path / "config.json").is_file():
            raise RunDirError(
                f"Cannot resume from {str(self.path)!r}: it holds no config.json of a run; check --config.resume_from."
            )

    def stored_config(self) -> dict:
        """The ``config.json`` of a run being resumed (validated as JSON)."""
        self._check_resumable()
        path = self.path / "config.json"
        try:
            stored = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise RunDirError(f"Cannot resume: {str(path)!r} is unreadable ({_short(error)}).") from None
        if not isinstance(stored, dict):
            raise RunDirError(f"Cannot resume: {str(path)!r} is not a config of this tool.")
        return stored

    # ------------------------------------------------------------------ lock, create
    @classmethod
    @contextlib.contextmanager
    def opened(cls, config, accelerator):
        """Validates `config` on every process, then yields its directory, locked on the main
        process while the block runs (at once when it exists: a resume or an overwrite; else
        when :meth:`create` makes it)."""
        from online.validation import validate

        validate(config)
        accelerator.wait_for_everyone()  # every process has validated before the main one creates anything
        run = cls.for_config(config)
        main = accelerator.is_main_process
        if main and run.path.exists():
            run.lock()  # nobody else may touch it while the models load
        try:
            yield run
        finally:
            if main:
                run.release()

    def lock(self) -> None:
        """Takes the directory's exclusive lock (creating the directory if needed)."""
        if not self._lock.held:
            self._lock.acquire()

    def release(self) -> None:
        self._lock.release()

    def create(self, overwrite: bool, config_dict: dict) -> None:
        """Makes the directory of a new run (emptying a recognized old run when `overwrite`)."""
        self.check(overwrite)  # again: the directory may have changed since validation
        existed = self.path.exists() and _has_content(self.path)
        self.lock()
        if existed:
            empty_run_directory(self.path, self.output_dir, self.kind)
        write_marker(self.path, self.kind)
        atomic_write_text(self.path / "config.json", json.dumps(config_dict, indent=2, default=str))

    # ------------------------------------------------------------------ resume
    def verify_for_resume(self, feature_dim: int) -> list[int]:
        """Checks every file a resume relies on, before anything is sampled or queried.

        Removes the temporary files of interrupted writes, marks a run from an older version
        of the tool, and reads every dataset shard, the staged batch of the round in
        progress and the last checkpoint's header. Returns the complete rounds.
        """
        clean_temp_files(self.path)
        if read_marker(self.path) is None:
            write_marker(self.path, TRAIN_KIND)
        done = complete_rounds(self.path)
        if done != list(range(len(done))):
            raise RunDirError(
                f"Cannot resume {str(self.path)!r}: its complete rounds {done} are not 0..n-1 in order; "
                "some round directory is missing."
            )
        for k in done:
            _verify_rows(data_shard(self.path, k), SHARD_FIELDS, feature_dim)
            _verify_json(round_dir(self.path, k) / "metrics.json")
        if done:
            from surrogate import SurrogateCheckpointError, read_header

            checkpoint = round_dir(self.path, done[-1]) / "surrogate.safetensors"
            try:
                read_header(checkpoint)
            except SurrogateCheckpointError as error:
                raise RunDirError(f"Cannot resume: {error}") from None
        current = done[-1] + 1 if done else 0
        if data_shard(self.path, current).exists():
            _verify_rows(data_shard(self.path, current), SHARD_FIELDS, feature_dim)
        elif (round_dir(self.path, current) / "batch.safetensors").exists():
            _verify_rows(round_dir(self.path, current) / "batch.safetensors", BATCH_FIELDS, feature_dim)
        return done


def _has_content(path: Path) -> bool:
    return any(child.name != LOCK for child in path.iterdir())


def _check_output_dir(output_dir: Path) -> None:
    probe = output_dir
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


def _short(error: BaseException) -> str:
    return str(error).splitlines()[0][:200] if str(error) else type(error).__name__


def _verify_json(path: Path) -> None:
    try:
        json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise RunDirError(f"Cannot resume: {str(path)!r} is unreadable or corrupt ({_short(error)}).") from None


def _verify_rows(path: Path, fields: tuple[str, ...], feature_dim: int) -> None:
    """A shard or staged batch: readable, with every field, one row per prompt, finite features."""
    fix = "restore it from a backup or start a new run"
    try:
        tensors, prompts = load_rows(path)
    except Exception as error:  # noqa: BLE001 - safetensors raises its own types on corrupt files
        raise RunDirError(f"Cannot resume: {str(path)!r} is corrupt ({_short(error)}); {fix}.") from None
    missing = [name for name in fields if name not in tensors]
    if missing:
        raise RunDirError(f"Cannot resume: {str(path)!r} lacks {missing}; {fix}.")
    n = len(prompts)
    for name in fields:
        if tensors[name].shape[:1] != (n,):
            raise RunDirError(
                f"Cannot resume: {str(path)!r} has {tuple(tensors[name].shape)} {name} for {n} prompts; {fix}."
            )
    features = tensors["features"]
    if features.ndim != 2 or features.shape[1] != feature_dim or not torch.isfinite(features).all():
        raise RunDirError(
            f"Cannot resume: {str(path)!r} holds features that are not finite {feature_dim}-d vectors; {fix}."
        )


__all__ = ["EVALUATE_KIND", "MARKER", "TRAIN_KIND", "RunDirError", "RunDirectory"]
