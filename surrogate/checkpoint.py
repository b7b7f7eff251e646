"""Safe, atomic surrogate checkpoints: one safetensors file with a JSON header.

File format (one file, so the write is a single atomic rename):

* the tensors (weights, training data, normalization statistics, cached factors) are the
  safetensors payload;
* the JSON header lives in the safetensors metadata (``__metadata__``) under the key
  ``"surrogate_header"``; it holds ``format``, ``version``, ``kind``, ``input_dim``,
  ``hyperparameters`` (the constructor keyword arguments), ``n_data``, ``round`` and an
  ``extra`` dict. ``read_header`` returns it without touching the tensors.

Reading never executes anything: the 8-byte length prefix and the JSON header are parsed
by hand and validated (size, JSON, offsets against the file length) before safetensors is
asked for the tensors; ``torch.load`` and ``pickle`` are never called. Every problem ends in
:class:`SurrogateCheckpointError`, a ``ValueError`` with a one-sentence message.
"""

from __future__ import annotations

import json
import os
import struct
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save as safetensors_save

FORMAT_NAME = "surrogate-checkpoint"
FORMAT_VERSION = 1
HEADER_KEY = "surrogate_header"
_MAX_HEADER_BYTES = 100 * 1024 * 1024


class SurrogateCheckpointError(ValueError):
    """A surrogate checkpoint is missing, unreadable, unsafe or not the one expected."""


def save_checkpoint(path: str | os.PathLike, tensors: dict[str, torch.Tensor], header: dict[str, Any]) -> Path:
    """Write ``tensors`` and ``header`` atomically to ``path``.

    The bytes go to a temporary file in the same folder, are flushed and fsynced, and the
    temporary file is then renamed over ``path`` with ``os.replace``, so a reader sees either
    the old checkpoint or the new one, never a partial file.

    Args:
        path: Destination file (conventionally ``*.safetensors``).
        tensors: Name -> tensor; moved to CPU and made contiguous before writing.
        header: JSON-serializable metadata; ``format`` and ``version`` are added.

    Returns:
        The destination path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    full_header = {"format": FORMAT_NAME, "version": FORMAT_VERSION, **header}
    cpu_tensors = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    payload = safetensors_save(cpu_tensors, metadata={HEADER_KEY: json.dumps(full_header, sort_keys=True)})
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
        raise
    return path


def _describe_foreign(prefix: bytes) -> str:
    if prefix[:1] == b"\x80" or prefix[:1] in (b"(", b"]", b"}", b"c"):
        return "looks like a pickle, which is never loaded for safety; re-save it with surrogate.save()"
    if prefix[:2] == b"PK":
        return "looks like a torch.save zip archive, which is never loaded for safety; re-save it with surrogate.save()"
    return "is not a safetensors surrogate checkpoint; re-save it with surrogate.save()"


def _parse_raw_header(path: Path) -> dict[str, Any]:
    """Parse and validate the safetensors JSON header of ``path`` without loading tensors."""
    if not path.is_file():
        raise SurrogateCheckpointError(f"Surrogate checkpoint {str(path)!r} does not exist; check the path or save one first.")
    size = path.stat().st_size
    with path.open("rb") as handle:
        prefix = handle.read(8)
        if len(prefix) < 8:
            raise SurrogateCheckpointError(
                f"Surrogate checkpoint {str(path)!r} is truncated ({size} bytes); re-save it with surrogate.save()."
            )
        (header_len,) = struct.unpack("<Q", prefix)
        if header_len > _MAX_HEADER_BYTES or header_len < 2:
            raise SurrogateCheckpointError(f"File {str(path)!r} {_describe_foreign(prefix)}.")
        if 8 + header_len > size:
            if handle.read(1) != b"{" and prefix[:1] != b"{":
                raise SurrogateCheckpointError(f"File {str(path)!r} {_describe_foreign(prefix)}.")
            raise SurrogateCheckpointError(
                f"Surrogate checkpoint {str(path)!r} is truncated (header runs past the end of the file); re-save it."
            )
        raw = handle.read(header_len)
    try:
        parsed = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise SurrogateCheckpointError(f"File {str(path)!r} {_describe_foreign(prefix)}.") from None
    if not isinstance(parsed, dict):
        raise SurrogateCheckpointError(f"File {str(path)!r} {_describe_foreign(prefix)}.")
    data_end = 0
    for name, info in parsed.items():
        if name == "__metadata__":
            continue
        try:
            start, end = info["data_offsets"]
        except (TypeError, KeyError, ValueError):
            raise SurrogateCheckpointError(f"Surrogate checkpoint {str(path)!r} has a malformed tensor table; re-save it.") from None
        data_end = max(data_end, int(end))
    if 8 + header_len + data_end > size:
        raise SurrogateCheckpointError(
            f"Surrogate checkpoint {str(path)!r} is truncated ({size} of {8 + header_len + data_end} bytes); re-save it."
        )
    return parsed


def read_header(path: str | os.PathLike) -> dict[str, Any]:
    """Read and validate the surrogate JSON header of a checkpoint, loading no tensors.

    Args:
        path: Checkpoint file written by :func:`save_checkpoint`.

    Returns:
        The header dict (``kind``, ``input_dim``, ``hyperparameters``, ``n_data``, ``round``...).

    Raises:
        SurrogateCheckpointError: If the file is missing, truncated, a pickle / zip archive,
            or a safetensors file without a surrogate header.
    """
    path = Path(path)
    parsed = _parse_raw_header(path)
    metadata = parsed.get("__metadata__") or {}
    if HEADER_KEY not in metadata:
        raise SurrogateCheckpointError(
            f"Safetensors file {str(path)!r} has no surrogate header; it was not written by surrogate.save()."
        )
    try:
        header = json.loads(metadata[HEADER_KEY])
    except json.JSONDecodeError:
        raise SurrogateCheckpointError(f"Surrogate checkpoint {str(path)!r} has a corrupt JSON header; re-save it.") from None
    if header.get("format") != FORMAT_NAME or header.get("version") != FORMAT_VERSION:
        raise SurrogateCheckpointError(
            f"Checkpoint {str(path)!r} has format {header.get('format')!r} version {header.get('version')!r}, "
            f"expected {FORMAT_NAME!r} version {FORMAT_VERSION}."
        )
    for key in ("kind", "input_dim", "hyperparameters", "n_data", "round"):
        if key not in header:
            raise SurrogateCheckpointError(f"Surrogate checkpoint {str(path)!r} header lacks {key!r}; re-save it.")
    return header


def check_header(
    header: dict[str, Any],
    path: str | os.PathLike,
    expected_kind: str | None = None,
    expected_input_dim: int | None = None,
) -> None:
    """Raise :class:`SurrogateCheckpointError` naming the first mismatch with what the caller expects."""
    if expected_kind is not None and header["kind"] != expected_kind:
        raise SurrogateCheckpointError(
            f"Checkpoint {str(path)!r} holds a {header['kind']!r} surrogate but a {expected_kind!r} one was expected; "
            f"load it as {header['kind']!r} or point to a {expected_kind!r} checkpoint."
        )
    if expected_input_dim is not None and int(header["input_dim"]) != int(expected_input_dim):
        raise SurrogateCheckpointError(
            f"Checkpoint {str(path)!r} was fitted on {header['input_dim']}-d features but {expected_input_dim}-d "
            f"features were expected; use the featurizer it was trained with."
        )


def load_checkpoint(
    path: str | os.PathLike,
    expected_kind: str | None = None,
    expected_input_dim: int | None = None,
    device: str | torch.device = "cpu",
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Validate the header of ``path`` and then load its tensors.

    Args:
        path: Checkpoint file.
        expected_kind: If given, the header's ``kind`` must equal it.
        expected_input_dim: If given, the header's ``input_dim`` must equal it.
        device: Where to put the tensors.

    Returns:
        ``(tensors, header)``.

    Raises:
        SurrogateCheckpointError: On any problem (see :func:`read_header`) or mismatch.
    """
    header = read_header(path)
    check_header(header, path, expected_kind, expected_input_dim)
    tensors: dict[str, torch.Tensor] = {}
    try:
        with safe_open(str(path), framework="pt", device=str(device)) as handle:
            for name in handle.keys():
                tensors[name] = handle.get_tensor(name)
    except Exception as exc:  # safetensors raises its own error type
        raise SurrogateCheckpointError(f"Surrogate checkpoint {str(path)!r} could not be read ({exc}); re-save it.") from None
    return tensors, header
