"""Checkpoints: round trips for every kind, clear refusals that execute nothing, registry."""

from __future__ import annotations

import json
import os
import pickle
import struct

import pytest
import torch

from surrogate import (
    SURROGATES,
    MLPUCBSurrogate,
    SurrogateCheckpointError,
    load_surrogate,
    make_surrogate,
)
from tests.surrogate.surrogate_helpers import D

KINDS = ("ucb", "bootstrap", "gp")


def test_header_is_json_in_safetensors_metadata(fitted, tmp_path):
    path = tmp_path / "m.safetensors"
    fitted["ucb"].save(path, extra={"note": "hello"})
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    meta = json.loads(raw[8 : 8 + n])["__metadata__"]
    header = json.loads(meta["surrogate_header"])
    assert header["format"] == "surrogate-checkpoint" and header["extra"]["note"] == "hello"


def test_wrong_kind_and_dimension_are_named(fitted, tmp_path):
    path = tmp_path / "ucb.safetensors"
    fitted["ucb"].save(path)
    with pytest.raises(SurrogateCheckpointError, match="holds a 'ucb' surrogate but a 'gp' one was expected"):
        load_surrogate(path, expected_kind="gp")
    with pytest.raises(SurrogateCheckpointError, match="'ucb' surrogate but a 'bootstrap'"):
        SURROGATES["bootstrap"].load(path)
    with pytest.raises(SurrogateCheckpointError, match=f"fitted on {D}-d features but 768-d"):
        load_surrogate(path, expected_input_dim=768)
    with pytest.raises(SurrogateCheckpointError, match="does not exist"):
        load_surrogate(tmp_path / "missing.safetensors")


def test_truncated_file_is_refused(fitted, tmp_path):
    path = tmp_path / "ucb.safetensors"
    fitted["ucb"].save(path)
    raw = path.read_bytes()
    for cut in (4, 100, len(raw) - 10):
        bad = tmp_path / f"cut{cut}.safetensors"
        bad.write_bytes(raw[:cut])
        with pytest.raises(SurrogateCheckpointError, match="truncated"):
            load_surrogate(bad)


class _Marker:
    """Unpickling this object would create a marker file."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.mark.parametrize("protocol", [0, 2, pickle.HIGHEST_PROTOCOL])
def test_pickle_is_refused_and_never_executed(tmp_path, protocol):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.safetensors"
    path.write_bytes(pickle.dumps({"state": _Marker(str(marker))}, protocol=protocol))
    with pytest.raises(SurrogateCheckpointError, match="never loaded|not a safetensors"):
        load_surrogate(path)
    with pytest.raises(SurrogateCheckpointError):
        MLPUCBSurrogate.load(path)
    assert not marker.exists()


def test_torch_save_archive_is_refused(tmp_path):
    path = tmp_path / "model.pt"
    torch.save({"w": torch.zeros(2)}, path)
    with pytest.raises(SurrogateCheckpointError, match="torch.save zip archive"):
        load_surrogate(path)


def test_plain_safetensors_without_header_is_refused(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(2)}, str(path))
    with pytest.raises(SurrogateCheckpointError, match="no surrogate header"):
        load_surrogate(path)


def test_atomic_write_replaces_and_cleans_up(fitted, tmp_path, monkeypatch):
    path = tmp_path / "m.safetensors"
    fitted["ucb"].save(path)
    before = path.read_bytes()

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        fitted["bootstrap"].save(path)
    monkeypatch.undo()
    assert path.read_bytes() == before  # the old checkpoint is intact
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


def test_a_checkpoint_gets_an_ordinary_files_permissions(fitted, tmp_path):
    """The one atomic writer gives every file what open() would (0666 less the umask), not mkstemp's 0600."""
    from atomicfile import atomic_write_bytes, process_umask

    fitted["ucb"].save(tmp_path / "m.safetensors")
    atomic_write_bytes(tmp_path / "other.json", b"{}")
    expected = 0o666 & ~process_umask()
    assert (tmp_path / "m.safetensors").stat().st_mode & 0o777 == expected
    assert (tmp_path / "other.json").stat().st_mode & 0o777 == expected


def test_the_umask_is_read_without_changing_it():
    from atomicfile import process_umask

    before = os.umask(0o027)
    try:
        assert process_umask() == 0o027
    finally:
        os.umask(before)


def test_registry_rejects_unknown_kind_listing_valid_ones():
    with pytest.raises(ValueError, match=r"valid kinds: \['bootstrap', 'gp', 'ucb'\]"):
        make_surrogate("thompson", input_dim=D)
    for kind in KINDS:
        assert make_surrogate(kind, input_dim=D).kind == kind
