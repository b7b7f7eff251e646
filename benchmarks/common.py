"""Shared helpers for benchmark scripts: machine facts and atomic JSON output."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

import torch

from atomicfile import atomic_write_text

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> dict:
    """Facts that make a figure comparable: versions, threads, CPU, device."""
    return {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "processor": platform.processor(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def write_result(name: str, payload: dict) -> Path:
    """Writes ``results/<name>.json`` atomically and returns its path."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"machine": machine(), **payload}, indent=2))
    os.replace(tmp, path)
    return path


def replace_between_markers(path: Path, start: str, end: str, text: str) -> bool:
    """Replaces what lies between the lines `start` and `end` of `path` with `text` (atomically);
    False, and nothing written, when the markers are missing."""
    content = path.read_text(encoding="utf-8")
    first, last = content.find(start), content.find(end)
    if first < 0 or last < first:
        return False
    atomic_write_text(path, content[: first + len(start)] + "\n" + text + "\n" + content[last:])
    return True
