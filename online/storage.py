"""The run directory: durable dataset shards, round checkpoints, atomic writes.

Layout of ``<run_dir>``::

    run.json                    the marker: this directory is a run of this tool
    .lock                       the OS lock a running loop holds
    config.json                 the resolved config of the run
    data/round_0003.safetensors the rows a round paid for: features, observed and true
                                rewards, validity, images (uint8); prompts in the metadata
    round_0003/batch.safetensors  the sampled batch, written before the oracle is asked
    round_0003/answers.jsonl      one line per answered item, appended and fsynced
    round_0003/surrogate.safetensors, config.json, rng.json, metrics.json
    round_0003/COMPLETE           written last: the round is whole
    metrics.jsonl               one line per complete round

Every file is written to a temporary name in its folder (``.<name>.<random>.tmp``) and
renamed, so a reader sees the old content or the new, never half of it. A round's query answers are durable as they
arrive (``answers.jsonl``), its dataset shard before the surrogate is fitted.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save

from das.run_dirs import atomic_write_bytes


def atomic_write_json(path: Path, payload: Any) -> None:
    atomic_write_bytes(path, json.dumps(payload, indent=2, default=str).encode("utf-8"))


def atomic_save_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    """safetensors file written atomically."""
    contiguous = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    atomic_write_bytes(path, save(contiguous, metadata=metadata))


def round_dir(run_dir: Path, round_index: int) -> Path:
    return run_dir / f"round_{round_index:04d}"


def data_shard(run_dir: Path, round_index: int) -> Path:
    return run_dir / "data" / f"round_{round_index:04d}.safetensors"


def complete_rounds(run_dir: Path) -> list[int]:
    """Indices of the rounds whose ``COMPLETE`` marker exists, ascending."""
    rounds = []
    for path in run_dir.glob("round_*/COMPLETE"):
        try:
            rounds.append(int(path.parent.name.split("_")[1]))
        except (IndexError, ValueError):
            continue
    return sorted(rounds)


def mark_complete(run_dir: Path, round_index: int) -> None:
    atomic_write_bytes(round_dir(run_dir, round_index) / "COMPLETE", b"")


class AnswerJournal:
    """Append-only record of a round's oracle answers, durable line by line.

    Each line is ``{"index": i, "reward": r | null, "true_reward": t | null, "status":
    "ok" | "failed", "attempts": n, "error": "..."}``. A torn last line (a kill during a
    write) is ignored on reading, so that item is simply asked again.
    """

    def __init__(self, path: Path):
        self.path = path

    def read(self) -> dict[int, dict]:
        answers: dict[int, dict] = {}
        if not self.path.exists():
            return answers
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
                answers[int(row["index"])] = row
            except (ValueError, KeyError, TypeError):
                continue  # a torn line from a crash mid-write
        return answers

    def append(self, rows: Iterable[dict]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        text = "".join(json.dumps(row) + "\n" for row in rows)
        with open(self.path, "a", encoding="utf-8") as handle:
            # A crash may have left a torn line without its newline: start on a fresh line.
            if handle.tell() > 0:
                with open(self.path, "rb") as check:
                    check.seek(-1, os.SEEK_END)
                    if check.read(1) != b"\n":
                        text = "\n" + text
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())


def save_rows(
    path: Path, tensors: dict[str, torch.Tensor], prompts: list[str], round_index: int, stats: dict | None = None
) -> None:
    """A batch or dataset shard: tensors plus the prompts, the round and the sampler's
    statistics of the batch (``stats``: a JSON dict, e.g. mean ESS) in the metadata."""
    metadata = {"prompts": json.dumps(prompts), "round": str(round_index), "stats": json.dumps(stats or {})}
    atomic_save_tensors(path, tensors, metadata)


def load_stats(path: Path) -> dict:
    """The ``stats`` a file written by :func:`save_rows` carries (empty for older files)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        return json.loads((handle.metadata() or {}).get("stats", "{}"))


def load_rows(path: Path) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Reads a file written by :func:`save_rows`: tensors and prompts."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata() or {}
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    return tensors, json.loads(metadata.get("prompts", "[]"))


def load_dataset(
    run_dir: Path, up_to_round: int | None = None
) -> tuple[dict[str, torch.Tensor], list[str], torch.Tensor]:
    """Concatenates the dataset shards of rounds ``0..up_to_round`` (all when None).

    Returns:
        tensors (features, rewards, true_rewards, valid, images), prompts, and the round
        of each row `(n,)`.
    """
    shards = sorted((run_dir / "data").glob("round_*.safetensors"))
    parts, prompts, rounds = [], [], []
    for shard in shards:
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


__all__ = [
    "AnswerJournal",
    "atomic_save_tensors",
    "atomic_write_bytes",
    "atomic_write_json",
    "complete_rounds",
    "data_shard",
    "load_dataset",
    "load_rows",
    "load_stats",
    "mark_complete",
    "round_dir",
    "save_rows",
]
