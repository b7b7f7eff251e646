"""The run directory of the online loop (or of an evaluation): where every file of a run
lives, whether the directory may be created, overwritten or resumed, its lock, and the
check of its files before a resume.

Layout of a training run ``<run_dir>``::

    run.json                    the marker: this directory is a run of this tool
    .lock                       the OS lock a running loop holds
    config.json                 the resolved config of the run
    data/round_0003.safetensors the rows a round paid for (:mod:`online.storage` says what is in it)
    round_0003/batch.safetensors  the sampled batch, written before the oracle is asked
    round_0003/answers.jsonl      one line per answered item, appended and fsynced
    round_0003/surrogate.safetensors, config.json, rng.json, metrics.json
    round_0003/COMPLETE           written last: the round is whole
    metrics.jsonl               one line per complete round
    reward_vs_queries.png, report/  the run's figure and its offline analysis

Layout of an evaluation directory (``mode=evaluate``)::

    run.json            the marker, kind ``online-evaluate``: only this makes a folder an evaluation
    .lock               the OS lock the evaluation holds for its whole life
    config.json         the resolved config of the evaluation (a resume uses it)
    batch.safetensors   the sampled batch (images, features, the surrogate's means), written
                        before the oracle is asked and kept
    answers.jsonl       one line per answered item, appended and fsynced
    images/0000.png, ..., grid.png
    metrics.json        written last, strict JSON (``null`` where nothing was answered)

An evaluation is resumed (``mode=evaluate`` with ``resume_from`` = its directory) only from a
directory with that marker: :meth:`RunDirectory.verify_evaluation_for_resume` reads its
staged batch, the oracle is asked only about items without a journaled answer, and the
images and ``metrics.json`` are written again from the batch and the journal.

:class:`RunFiles` (and the :class:`RoundFiles` it hands out) own these paths: nothing else
builds one. A round's query answers are durable as they arrive (``answers.jsonl``), its
dataset shard before the surrogate is fitted.

Only this module creates, empties or locks a run directory (through :mod:`dasapp.run_dirs`,
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
import shutil
from pathlib import Path

import torch

from dasapp.run_dirs import (
    LOCK,
    MARKER,
    DirectoryLock,
    RunDirError,
    RunPlace,
    atomic_write_text,
    check_marked_run,
    clean_temp_files,
    make_sibling_folder,
    move_aside,
    remove_aside,
    set_aside_runs,
    write_marker,
)
from dasapp.stopping import deferred
from online.storage import (
    AnswerJournal,
    atomic_touch,
    atomic_write_json,
    atomic_write_json_lines,
    encode_shard,
    load_rows,
    load_stats,
    save_rows,
)

TRAIN_KIND = "online-train"
EVALUATE_KIND = "online-evaluate"
SHARD_FIELDS = ("features", "rewards", "true_rewards", "valid", "images")
BATCH_FIELDS = ("images", "features")
EVALUATION_BATCH_FIELDS = ("images", "features", "predicted")
DATA_FOLDER = "data"
IMAGES_FOLDER = "images"


class RoundFiles:
    """The files of round `index` of a training run, and what is read from and written to them.

    Args:
        run_path: the run directory.
        index: the round.
    """

    def __init__(self, run_path: Path, index: int):
        name = f"round_{index:04d}"
        self.index = index
        self.path = run_path / name
        self.shard_path = run_path / DATA_FOLDER / f"{name}.safetensors"
        self.batch_path = self.path / "batch.safetensors"
        self.surrogate_path = self.path / "surrogate.safetensors"
        self.journal = AnswerJournal(self.path / "answers.jsonl")

    # ------------------------------------------------------------------ staged batch (sampled, being answered)
    def has_batch(self) -> bool:
        return self.batch_path.exists()

    def save_batch(self, batch: dict) -> None:
        """Stages a sampled batch (images, features, prompts) with the sampler's mean ESS
        fraction and log-normalizer, before the oracle sees any of it."""
        stats = {
            "ess_fraction": float(batch["ess_fraction"].mean()),
            "log_normalizer": float(batch["log_normalizer"].mean()),
        }
        tensors = {"images": batch["images"], "features": batch["features"]}
        save_rows(self.batch_path, tensors, batch["prompts"], self.index, stats)

    def load_batch(self) -> tuple[dict[str, torch.Tensor], list[str]]:
        return load_rows(self.batch_path)

    def drop_batch(self) -> None:
        """Removes the staged batch once the shard holds everything in it."""
        self.batch_path.unlink(missing_ok=True)

    def unanswered(self, count: int) -> list[int]:
        """The items of a batch of `count` that have no journaled answer yet."""
        answered = self.journal.read()
        return [i for i in range(count) if i not in answered]

    # ------------------------------------------------------------------ dataset shard
    def has_shard(self) -> bool:
        return self.shard_path.exists()

    def write_shard(self, staged: dict[str, torch.Tensor], prompts: list[str]) -> None:
        """The staged batch and every journaled answer as the round's dataset shard."""
        tensors = encode_shard(staged, self.journal.read())
        save_rows(self.shard_path, tensors, prompts, self.index, load_stats(self.batch_path))

    def load_shard(self) -> tuple[dict[str, torch.Tensor], list[str]]:
        return load_rows(self.shard_path)

    def shard_stats(self) -> dict:
        """The sampler's statistics of the batch, as the shard keeps them."""
        return load_stats(self.shard_path)

    # ------------------------------------------------------------------ checkpoint and records
    def write_config(self, config_dict: dict) -> None:
        atomic_write_json(self.path / "config.json", config_dict)

    def write_rng(self, record: dict) -> None:
        atomic_write_json(self.path / "rng.json", record)

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.json"

    def write_metrics(self, row: dict) -> None:
        atomic_write_json(self.metrics_path, row)

    def read_metrics(self) -> dict:
        return json.loads(self.metrics_path.read_text())

    def mark_complete(self) -> None:
        """Written last: the round is whole."""
        atomic_touch(self.path / "COMPLETE")


class RunFiles:
    """Every path of a run directory (see the module docstring); reading needs nothing else.

    Args:
        path: the run (or evaluation) directory.
    """

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self.config_path = self.path / "config.json"
        self.metrics_lines_path = self.path / "metrics.jsonl"
        self.figure_path = self.path / "reward_vs_queries.png"
        self.report_path = self.path / "report"
        self.answers_pattern = self.path / "round_*" / "answers.jsonl"  # for messages

    def round(self, index: int) -> RoundFiles:
        return RoundFiles(self.path, index)

    def complete_rounds(self) -> list[int]:
        """Indices of the rounds whose ``COMPLETE`` marker exists, ascending."""
        rounds = []
        for path in self.path.glob("round_*/COMPLETE"):
            try:
                rounds.append(int(path.parent.name.split("_")[1]))
            except (IndexError, ValueError):
                continue
        return sorted(rounds)

    def write_metrics_lines(self, rows: list[dict]) -> None:
        """Rewrites ``metrics.jsonl`` from the complete rounds' metrics (no duplicates on resume)."""
        atomic_write_json_lines(self.metrics_lines_path, rows)

    def load_dataset(self, up_to_round: int | None = None) -> tuple[dict[str, torch.Tensor], list[str], torch.Tensor]:
        """Concatenates the dataset shards of rounds ``0..up_to_round`` (all when None).

        Returns:
            tensors (features, rewards, true_rewards, valid, images), prompts, and the round
            of each row `(n,)`.
        """
        parts, prompts, rounds = [], [], []
        for shard in sorted((self.path / DATA_FOLDER).glob("round_*.safetensors")):
            index = int(shard.stem.split("_")[1])
            if up_to_round is not None and index > up_to_round:
                continue
            tensors, shard_prompts = load_rows(shard)
            parts.append(tensors)
            prompts.extend(shard_prompts)
            rounds.append(torch.full((len(shard_prompts),), index, dtype=torch.long))
        if not parts:
            return {}, [], torch.zeros(0, dtype=torch.long)
        merged = {key: torch.cat([p[key] for p in parts]) for key in parts[0]}
        return merged, prompts, torch.cat(rounds)

    # ------------------------------------------------------------------ evaluation
    @staticmethod
    def image_name(index: int) -> str:
        """An evaluation image's file, relative to the directory."""
        return f"{IMAGES_FOLDER}/{index:04d}.png"

    @property
    def evaluation_batch_path(self) -> Path:
        return self.path / "batch.safetensors"

    @property
    def evaluation_journal(self) -> AnswerJournal:
        return AnswerJournal(self.path / "answers.jsonl")

    @property
    def evaluation_metrics_path(self) -> Path:
        return self.path / "metrics.json"

    def stage_evaluation(self, batch: dict, predicted: torch.Tensor) -> None:
        """Stages an evaluation's sampled batch (images, features, prompts) with the surrogate's
        means `predicted` `(n,)` and the sampler's mean ESS fraction, before the oracle sees any of it."""
        stats = {"ess_fraction": float(batch["ess_fraction"].mean())}
        tensors = {"images": batch["images"], "features": batch["features"], "predicted": predicted}
        save_rows(self.evaluation_batch_path, tensors, batch["prompts"], 0, stats)

    def load_evaluation_batch(self) -> dict:
        """The staged batch: ``images``, ``features``, ``predicted``, ``prompts`` and ``ess_fraction``."""
        tensors, prompts = load_rows(self.evaluation_batch_path)
        try:
            ess = float(load_stats(self.evaluation_batch_path)["ess_fraction"])
        except (ValueError, KeyError, TypeError):
            ess = None  # statistics lost (a hand-edited file): reported as unknown
        return {**tensors, "prompts": prompts, "ess_fraction": ess}

    def write_evaluation(self, pixels, grid, metrics: dict) -> None:
        """An evaluation's images `(N, H, W, 3)` uint8, their grid, and last its ``metrics.json``
        (strict JSON: a NaN there is a bug, refused before anything is written)."""
        from das.images import save_png

        text = json.dumps(metrics, indent=2, allow_nan=False)
        (self.path / IMAGES_FOLDER).mkdir(exist_ok=True)
        for i, image in enumerate(pixels):
            save_png(image, self.path / self.image_name(i))
        save_png(grid, self.path / "grid.png")
        atomic_write_text(self.evaluation_metrics_path, text)


def complete_rounds(run_dir: Path | str) -> list[int]:
    """The complete rounds of the run in `run_dir` (:meth:`RunFiles.complete_rounds`)."""
    return RunFiles(run_dir).complete_rounds()


def load_dataset(run_dir: Path | str, up_to_round: int | None = None):
    """The dataset of the run in `run_dir` (:meth:`RunFiles.load_dataset`)."""
    return RunFiles(run_dir).load_dataset(up_to_round)


class RunDirectory(RunFiles):
    """A training run or evaluation directory ``<output_dir>/<run_name>`` (or ``resume_from``):
    its files (:class:`RunFiles`), its lock, and whether it may be created or resumed.

    Args:
        path: the directory.
        output_dir: the folder it must sit directly in (None for a resumed run, whose path
            is given as is).
        kind: :data:`TRAIN_KIND` or :data:`EVALUATE_KIND`.
    """

    def __init__(self, path: Path, output_dir: Path | str | None, kind: str, run_name: str | None = None):
        super().__init__(path)
        self.run_name = run_name
        self.output_dir_given = "" if output_dir is None else str(output_dir)
        self.output_dir = None if output_dir is None else Path(output_dir)
        self.kind = kind
        self._lock = DirectoryLock(self.path, "run" if kind == TRAIN_KIND else "evaluation")

    @classmethod
    def for_config(cls, config) -> RunDirectory:
        kind = EVALUATE_KIND if config.mode == "evaluate" else TRAIN_KIND
        if config.resume_from:  # a training run, or (mode=evaluate) an evaluation, continued where it is
            return cls(Path(config.resume_from), None, kind)
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
        hint = f"resume it with --config.resume_from={self.path}, " if self.kind == TRAIN_KIND else ""
        what = "run" if self.kind == TRAIN_KIND else "evaluation"
        RunPlace(self.output_dir_given, self.run_name, self.kind, what=what, hint=hint).check(overwrite)

    def _check_resumable(self) -> None:
        if self.kind == EVALUATE_KIND:
            self._check_evaluation_resumable()
            return
        check_marked_run(self.path, TRAIN_KIND, f"Cannot resume from {str(self.path)!r}", "check --config.resume_from")
        if not self.config_path.is_file():
            raise RunDirError(
                f"Cannot resume from {str(self.path)!r}: it holds no config.json of a run; check --config.resume_from."
            )

    def _check_evaluation_resumable(self) -> None:
        """An evaluation is resumed only from a real directory carrying this tool's
        ``online-evaluate`` marker and its ``config.json`` (a copied config.json is not enough)."""
        where = f"Cannot resume the evaluation {str(self.path)!r}"
        fix = "point --config.resume_from at the directory of an evaluation (mode=evaluate) this tool made"
        check_marked_run(self.path, EVALUATE_KIND, where, fix, what="evaluation")
        if not self.config_path.is_file():
            raise RunDirError(f"{where}: it holds no config.json; start a new evaluation instead.")

    def stored_config(self) -> dict:
        """The ``config.json`` of a run being resumed (validated as JSON)."""
        self._check_resumable()
        path = self.config_path
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
        """Yields the directory of a validated `config`, locked on the main process while the block
        runs (at once when it exists: a resume or an overwrite; else when :meth:`create` makes it).

        The caller has validated `config` on every process (:func:`online.validation.validate`)."""
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
        """Makes the directory of a new run; with `overwrite`, replaces a recognized old run of this kind.

        The new run is made whole and locked first, in a temporary sibling; only then is the old
        run renamed aside, the new one renamed into its place, and the old one deleted. A crash
        at any point leaves the old run intact (in place, or whole in ``.<name>.old.<random>.tmp``).
        """
        self.check(overwrite)  # again: the directory may have changed since validation
        if not (self.path.exists() and _has_content(self.path)):
            self.lock()
            self._fill(self.path, config_dict)
            return
        fresh = make_sibling_folder(self.path, ".new.")
        fresh_lock = DirectoryLock(fresh, self._lock.what).acquire()
        try:
            self._fill(fresh, config_dict)
            with deferred():  # a stop never lands between the two renames
                aside = move_aside(self.path, self.output_dir, self.kind)
                try:
                    os.replace(fresh, self.path)
                except BaseException:
                    os.replace(aside / "run", self.path)  # the old run goes back where it was
                    aside.rmdir()
                    raise
        except BaseException:
            fresh_lock.release()
            shutil.rmtree(fresh, ignore_errors=True)  # ours, and nothing was asked in it
            raise
        self._lock.release()  # the old run's lock, now inside `aside`
        fresh_lock.directory = self.path
        self._lock = fresh_lock
        remove_aside(aside, self.kind)
        for leftover in set_aside_runs(self.path, self.kind):  # from an overwrite interrupted after its swap
            remove_aside(leftover, self.kind)

    def write_config(self, config_dict: dict) -> None:
        """Rewrites the run's top-level ``config.json`` (a resume records the settings it runs with)."""
        atomic_write_text(self.config_path, json.dumps(config_dict, indent=2, default=str))

    def _fill(self, folder: Path, config_dict: dict) -> None:
        """The marker and ``config.json`` of a new run (and an evaluation's image folder) in `folder`."""
        write_marker(folder, self.kind)
        atomic_write_text(folder / self.config_path.name, json.dumps(config_dict, indent=2, default=str))
        if self.kind == EVALUATE_KIND:
            (folder / IMAGES_FOLDER).mkdir(parents=True, exist_ok=True)

    # ------------------------------------------------------------------ resume
    def verify_for_resume(self, feature_dim: int) -> list[int]:
        """Checks every file a resume relies on, before anything is sampled or queried.

        Removes the temporary files of interrupted writes and reads every dataset shard, the
        staged batch of the round in progress and the last checkpoint's header. Returns the
        complete rounds.
        """
        self._check_resumable()  # again, under the lock
        clean_temp_files(self.path)
        done = self.complete_rounds()
        if done != list(range(len(done))):
            raise RunDirError(
                f"Cannot resume {str(self.path)!r}: its complete rounds {done} are not 0..n-1 in order; "
                "some round directory is missing."
            )
        for k in done:
            _verify_rows(self.round(k).shard_path, SHARD_FIELDS, feature_dim)
            _verify_json(self.round(k).metrics_path)
        if done:
            from surrogate import SurrogateCheckpointError, read_header

            try:
                read_header(self.round(done[-1]).surrogate_path)
            except SurrogateCheckpointError as error:
                raise RunDirError(f"Cannot resume: {error}") from None
        current = self.round(done[-1] + 1 if done else 0)
        if current.has_shard():
            _verify_rows(current.shard_path, SHARD_FIELDS, feature_dim)
        elif current.has_batch():
            _verify_rows(current.batch_path, BATCH_FIELDS, feature_dim)
        return done

    def verify_evaluation_for_resume(self, feature_dim: int) -> bool:
        """Checks an evaluation being resumed, before anything is sampled or queried; returns
        whether its batch is staged.

        Removes the temporary files of interrupted writes and reads the staged batch. Without a
        staged batch only an evaluation that paid for nothing yet (no ``answers.jsonl``, no
        ``metrics.json``: interrupted while sampling) may go on, by sampling again; any other
        (e.g. one made by an older version of the tool) would be asked everything a second time.
        """
        self._check_resumable()  # again, under the lock
        clean_temp_files(self.path)
        if self.evaluation_batch_path.exists():
            _verify_rows(self.evaluation_batch_path, EVALUATION_BATCH_FIELDS, feature_dim)
            return True
        if self.evaluation_journal.path.exists() or self.evaluation_metrics_path.exists():
            raise RunDirError(
                f"Cannot resume the evaluation {str(self.path)!r}: it holds answers or metrics but no staged batch "
                f"({self.evaluation_batch_path.name}) to match them to, so resuming would pay for every image again; "
                "start a new evaluation (another --config.run_name, or --config.overwrite=True)."
            )
        return False


def _has_content(path: Path) -> bool:
    return any(child.name != LOCK for child in path.iterdir())


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


__all__ = [
    "EVALUATE_KIND",
    "MARKER",
    "TRAIN_KIND",
    "RoundFiles",
    "RunDirError",
    "RunDirectory",
    "RunFiles",
    "complete_rounds",
    "load_dataset",
]
