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

A checkpoint is untrusted data. :func:`read_header` checks the header's fields and types,
:func:`read_tensor_table` gives every tensor's dtype and shape from the safetensors header
without loading anything, and :func:`load_tensors` compares that table with the names,
dtypes and shapes the caller expects *before* a single tensor is read, then refuses
non-finite values. ``Surrogate.load`` / ``surrogate.load_surrogate`` use them in that order,
after checking the header's hyperparameters (``surrogate.hyperparameters``), so a file can
neither make the loader allocate more than its hyperparameters allow nor feed it NaNs.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import torch
from safetensors import safe_open
from safetensors.torch import save as safetensors_save

from atomicfile import atomic_write_bytes

FORMAT_NAME = "surrogate-checkpoint"
FORMAT_VERSION = 1
HEADER_KEY = "surrogate_header"
_MAX_HEADER_BYTES = 100 * 1024 * 1024


class SurrogateCheckpointError(ValueError):
    """A surrogate checkpoint is missing, unreadable, unsafe or not the one expected."""


class TensorInfo(NamedTuple):
    """Dtype and shape of one tensor, as a safetensors header lists them.

    Attributes:
        dtype: Safetensors dtype name (``"F32"``, ``"F64"``, ``"I64"``...).
        shape: Tensor shape.
    """

    dtype: str
    shape: tuple[int, ...]

    def __str__(self) -> str:
        return f"{self.dtype} {self.shape}"


_SAFETENSORS_DTYPES = {
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.float32: "F32",
    torch.float64: "F64",
    torch.int8: "I8",
    torch.int16: "I16",
    torch.int32: "I32",
    torch.int64: "I64",
    torch.uint8: "U8",
    torch.bool: "BOOL",
}


def tensor_info(dtype: torch.dtype, shape: tuple[int, ...] | torch.Size) -> TensorInfo:
    """The :class:`TensorInfo` a tensor of ``dtype`` and ``shape`` gets in a safetensors file."""
    return TensorInfo(_SAFETENSORS_DTYPES[dtype], tuple(int(n) for n in shape))


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def save_checkpoint(path: str | os.PathLike, tensors: dict[str, torch.Tensor], header: dict[str, Any]) -> Path:
    """Write ``tensors`` and ``header`` atomically to ``path``.

    Through the project's one atomic writer (:func:`atomicfile.atomic_write_bytes`): a temporary
    file in the same folder, fsynced and renamed over ``path``, so a reader sees either the old
    checkpoint or the new one, never a partial file; it gets an ordinary file's permissions.

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
    atomic_write_bytes(path, payload)
    return path


def _describe_foreign(prefix: bytes) -> str:
    if prefix[:1] == b"\x80" or prefix[:1] in (b"(", b"]", b"}", b"c"):
        return "looks like a pickle, which is never loaded for safety; re-save it with surrogate.save()"
    if prefix[:2] == b"PK":
        return (
            "looks like a torch.save zip archive, which is never loaded for safety; re-save it with surrogate.save()"
        )
    return "is not a safetensors surrogate checkpoint; re-save it with surrogate.save()"


def _parse_raw_header(path: Path) -> dict[str, Any]:
    """Parse and validate the safetensors JSON header of ``path`` without loading tensors."""
    if not path.is_file():
        raise SurrogateCheckpointError(
            f"Surrogate checkpoint {str(path)!r} does not exist; check the path or save one first."
        )
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
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise SurrogateCheckpointError(f"File {str(path)!r} {_describe_foreign(prefix)}.") from None
    if not isinstance(parsed, dict):
        raise SurrogateCheckpointError(f"File {str(path)!r} {_describe_foreign(prefix)}.")
    data_end = 0
    for name, info in parsed.items():
        if name == "__metadata__":
            continue
        try:
            start, end = info["data_offsets"]
            if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in (start, end)):
                raise ValueError
        except (TypeError, KeyError, ValueError):
            message = f"Surrogate checkpoint {str(path)!r} has a malformed tensor table; re-save it."
            raise SurrogateCheckpointError(message) from None
        data_end = max(data_end, end)
    if 8 + header_len + data_end > size:
        raise SurrogateCheckpointError(
            f"Surrogate checkpoint {str(path)!r} is truncated ({size} of {8 + header_len + data_end} bytes); "
            "re-save it."
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
    if not isinstance(metadata, dict) or HEADER_KEY not in metadata:
        raise SurrogateCheckpointError(
            f"Safetensors file {str(path)!r} has no surrogate header; it was not written by surrogate.save()."
        )
    try:
        header = json.loads(metadata[HEADER_KEY])
        if not isinstance(header, dict):
            raise TypeError
    except (json.JSONDecodeError, RecursionError, TypeError):
        raise SurrogateCheckpointError(
            f"Surrogate checkpoint {str(path)!r} has a corrupt JSON header; re-save it."
        ) from None
    if header.get("format") != FORMAT_NAME or header.get("version") != FORMAT_VERSION:
        raise SurrogateCheckpointError(
            f"Checkpoint {str(path)!r} has format {_show(header.get('format'))} "
            f"version {_show(header.get('version'))}, "
            f"expected {FORMAT_NAME!r} version {FORMAT_VERSION}."
        )
    for key in ("kind", "input_dim", "hyperparameters", "n_data", "round"):
        if key not in header:
            raise SurrogateCheckpointError(f"Surrogate checkpoint {str(path)!r} header lacks {key!r}; re-save it.")
    _check_header_types(header, path)
    return header


def _check_header_types(header: dict[str, Any], path: Path) -> None:
    """Types of the header fields every reader relies on (values of ``hyperparameters`` are checked on load)."""
    if not isinstance(header["kind"], str):
        raise SurrogateCheckpointError(
            f"Surrogate checkpoint {str(path)!r} header field 'kind' must be a string, got {_show(header['kind'])}."
        )
    for key in ("input_dim", "n_data", "round"):
        value = header[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise SurrogateCheckpointError(
                f"Surrogate checkpoint {str(path)!r} header field {key!r} must be a non-negative integer, "
                f"got {_show(value)}; re-save it."
            )
    if not isinstance(header["hyperparameters"], dict):
        raise SurrogateCheckpointError(
            f"Surrogate checkpoint {str(path)!r} header field 'hyperparameters' must be an object, "
            f"got {_show(header['hyperparameters'])}; re-save it."
        )
    extra = header.get("extra", {})
    if not isinstance(extra, dict) or not isinstance(extra.get("fit_info", {}), dict):
        raise SurrogateCheckpointError(
            f"Surrogate checkpoint {str(path)!r} header field 'extra' (and its 'fit_info') must be an object; "
            f"re-save it."
        )


def read_tensor_table(path: str | os.PathLike) -> dict[str, TensorInfo]:
    """Every tensor's dtype and shape as the safetensors header lists them, loading no tensor.

    Args:
        path: Checkpoint file.

    Returns:
        Name -> :class:`TensorInfo`.

    Raises:
        SurrogateCheckpointError: If the file is unreadable (see :func:`read_header`) or an
            entry of its tensor table is malformed.
    """
    path = Path(path)
    table: dict[str, TensorInfo] = {}
    for name, info in _parse_raw_header(path).items():
        if name == "__metadata__":
            continue
        dtype, shape = info.get("dtype"), info.get("shape")
        if (
            not isinstance(dtype, str)
            or not isinstance(shape, list)
            or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape)
        ):
            raise SurrogateCheckpointError(
                f"Surrogate checkpoint {str(path)!r} lists tensor {name!r} with a malformed dtype or shape; "
                f"re-save it."
            )
        table[name] = TensorInfo(dtype, tuple(shape))
    return table


def check_tensor_table(
    path: str | os.PathLike, table: Mapping[str, TensorInfo], expected: Mapping[str, TensorInfo]
) -> None:
    """Compare a checkpoint's tensor table with the expected names, dtypes and shapes.

    Args:
        path: Checkpoint file (for messages).
        table: From :func:`read_tensor_table`.
        expected: Name -> :class:`TensorInfo` the surrogate's hyperparameters imply.

    Raises:
        SurrogateCheckpointError: Naming the first missing, unexpected or mismatched tensor
            with the expected and the found dtype/shape.
    """
    for name, want in expected.items():
        if name not in table:
            raise SurrogateCheckpointError(
                f"Surrogate checkpoint {str(path)!r} lacks tensor {name!r} (expected {want.dtype} of shape "
                f"{want.shape}); re-save it with surrogate.save()."
            )
    for name, found in table.items():
        if name not in expected:
            raise SurrogateCheckpointError(
                f"Surrogate checkpoint {str(path)!r} holds an unexpected tensor {name!r} ({found.dtype} of shape "
                f"{found.shape}) for the surrogate its header describes; re-save it with surrogate.save()."
            )
    for name, want in expected.items():
        found = table[name]
        if found.shape != want.shape:
            raise SurrogateCheckpointError(
                f"Surrogate checkpoint {str(path)!r} tensor {name!r} has shape {found.shape} but its header implies "
                f"shape {want.shape}; re-save it with surrogate.save()."
            )
        if found.dtype != want.dtype:
            raise SurrogateCheckpointError(
                f"Surrogate checkpoint {str(path)!r} tensor {name!r} has dtype {found.dtype} but its header implies "
                f"{want.dtype}; re-save it with surrogate.save()."
            )


def load_tensors(
    path: str | os.PathLike,
    expected: Mapping[str, TensorInfo],
    fixed: Mapping[str, torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """Load exactly the expected tensors, to CPU, after checking the table; refuse non-finite values.

    The tensor table is compared with ``expected`` (:func:`check_tensor_table`) before any
    tensor is read, and each tensor's dtype and shape are compared again as it is read (so a
    file replaced in between cannot slip through). Every floating tensor must then be finite,
    except those in ``fixed``, whose legitimate value holds non-finite entries (a constraint's
    infinite upper bound): they must equal that value exactly.

    Args:
        path: Checkpoint file.
        expected: Name -> :class:`TensorInfo`.
        fixed: Name -> the exact value a tensor with non-finite entries must have.

    Returns:
        Name -> tensor (CPU, contiguous).

    Raises:
        SurrogateCheckpointError: On any mismatch, an unreadable file, or non-finite values.
    """
    fixed = fixed or {}
    check_tensor_table(path, read_tensor_table(path), expected)
    changed = f"Surrogate checkpoint {str(path)!r} changed while it was read; retry."
    tensors: dict[str, torch.Tensor] = {}
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            if set(handle.keys()) != set(expected):
                raise SurrogateCheckpointError(changed)
            for name, want in expected.items():
                piece = handle.get_slice(name)
                if TensorInfo(piece.get_dtype(), tuple(piece.get_shape())) != want:
                    raise SurrogateCheckpointError(changed)
                tensors[name] = handle.get_tensor(name)
    except SurrogateCheckpointError:
        raise
    except Exception as exc:  # safetensors raises its own error type
        message = f"Surrogate checkpoint {str(path)!r} could not be read ({exc}); re-save it."
        raise SurrogateCheckpointError(message) from None
    for name, tensor in tensors.items():
        if name in fixed:
            if not torch.equal(tensor, fixed[name].to(tensor.dtype)):
                raise SurrogateCheckpointError(
                    f"Surrogate checkpoint {str(path)!r} tensor {name!r} differs from the fixed value "
                    f"{fixed[name].tolist()} it must hold; re-save it with surrogate.save()."
                )
        elif tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise SurrogateCheckpointError(
                f"Surrogate checkpoint {str(path)!r} holds non-finite values in tensor {name!r}; "
                f"re-fit the surrogate and save it again."
            )
    return tensors


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
