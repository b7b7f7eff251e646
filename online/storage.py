"""The file formats of a run: atomic writes, the answer journal, and the row files
(staged batches and dataset shards) with their encoding.

Where each file lives is :mod:`online.run_directory`'s business; this module only says
what is in a file and how it is written. Every file is written to a temporary name in its
folder (``.<name>.<random>.tmp``) and renamed, so a reader sees the old content or the new,
never half of it; the journal is appended and fsynced line by line instead.

A dataset shard holds the rows a round paid for: ``features``, observed ``rewards`` and
``true_rewards`` (NaN where the oracle failed), ``valid``, and ``images`` as uint8; the
prompts, the round and the sampler's statistics of the batch are in its metadata.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save

from atomicfile import atomic_write_bytes


def atomic_write_json(path: Path, payload: Any) -> None:
    atomic_write_bytes(path, json.dumps(payload, indent=2, default=str).encode("utf-8"))


def atomic_touch(path: Path) -> None:
    """An empty file (a marker) written atomically."""
    atomic_write_bytes(path, b"")


def atomic_write_json_lines(path: Path, rows: list[dict]) -> None:
    """One JSON object per line, the whole file rewritten atomically."""
    atomic_write_bytes(path, "".join(json.dumps(row) + "\n" for row in rows).encode("utf-8"))


def atomic_save_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    """safetensors file written atomically."""
    contiguous = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    atomic_write_bytes(path, save(contiguous, metadata=metadata))


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


def encode_shard(staged: dict[str, torch.Tensor], answers: dict[int, dict]) -> dict[str, torch.Tensor]:
    """A staged batch (float ``images`` in [0, 1], ``features``) and its journaled answers
    (index -> journal row, one per item) as the tensors of a dataset shard."""
    images = staged["images"]
    n = images.shape[0]
    ok = [answers[i]["status"] == "ok" for i in range(n)]
    observed = [answers[i]["reward"] if ok[i] else math.nan for i in range(n)]
    true = [answers[i]["true_reward"] if ok[i] else math.nan for i in range(n)]
    return {
        "features": staged["features"],
        "rewards": torch.tensor(observed, dtype=torch.float64),
        "true_rewards": torch.tensor(true, dtype=torch.float64),
        "valid": torch.tensor(ok),
        "images": (images.clamp(0, 1) * 255).round().to(torch.uint8),
    }


def decode_images(pixels: torch.Tensor) -> torch.Tensor:
    """A shard's uint8 ``images`` as floats in [0, 1]."""
    return pixels.float() / 255.0


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


__all__ = [
    "AnswerJournal",
    "atomic_save_tensors",
    "atomic_touch",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_json_lines",
    "decode_images",
    "encode_shard",
    "load_rows",
    "load_stats",
    "save_rows",
]
