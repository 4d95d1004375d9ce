"""Atomic writes and safetensors storage: no half-written files, shared tensors stored once."""

from __future__ import annotations

import json
import os

import pytest
import torch

from defectnas import storage
from defectnas.storage import (append_line, atomic_write_bytes, atomic_write_json, atomic_write_text, load_tensors,
                               save_tensors)


def _leftovers(directory):
    return [p.name for p in directory.iterdir() if p.name.endswith(".tmp") or p.name.startswith(".")]


def test_atomic_writes_replace_content_and_leave_no_temp_files(tmp_path):
    target = tmp_path / "sub" / "f.json"  # parent created
    atomic_write_json(target, {"a": 1, "b": [1, 2]})
    assert json.loads(target.read_text()) == {"a": 1, "b": [1, 2]}
    atomic_write_text(target, "second")
    assert target.read_text() == "second"
    atomic_write_bytes(target, b"\x00\x01")
    assert target.read_bytes() == b"\x00\x01"
    save_tensors(tmp_path / "sub" / "w.safetensors", {"x": torch.ones(2)})
    assert _leftovers(tmp_path / "sub") == []


@pytest.fixture
def umask_027():
    old = os.umask(0o027)
    yield
    os.umask(old)


def test_atomic_write_uses_umask_permissions(tmp_path, umask_027):
    atomic_write_text(tmp_path / "a.txt", "x")
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o640  # as open() would, not mkstemp's 0600


def test_save_tensors_uses_umask_permissions(tmp_path, umask_027):
    save_tensors(tmp_path / "w.safetensors", {"x": torch.ones(1)})
    assert (tmp_path / "w.safetensors").stat().st_mode & 0o777 == 0o640


def test_failed_write_keeps_the_previous_file(tmp_path, monkeypatch):
    target = tmp_path / "f.txt"
    atomic_write_text(target, "old")

    def broken_fsync(fd):
        raise OSError("disk full")

    monkeypatch.setattr(storage.os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_text(target, "new content that never lands")
    assert target.read_text() == "old"
    assert _leftovers(tmp_path) == []


def test_failed_tensor_write_keeps_the_previous_file(tmp_path, monkeypatch):
    target = tmp_path / "w.safetensors"
    save_tensors(target, {"x": torch.zeros(3)})

    def broken_fsync(fd):
        os.write(fd, b"half a file")
        raise KeyboardInterrupt  # a Ctrl-C mid-write

    monkeypatch.setattr(storage.os, "fsync", broken_fsync)
    with pytest.raises(KeyboardInterrupt):
        save_tensors(target, {"x": torch.ones(3)})
    tensors, _ = load_tensors(target)
    assert torch.equal(tensors["x"], torch.zeros(3))
    assert _leftovers(tmp_path) == []


def test_tensors_and_metadata_round_trip(tmp_path):
    tensors = {"a": torch.randn(3, 4), "b": torch.arange(5), "c": torch.tensor(2.5), "e": torch.zeros(0)}
    save_tensors(tmp_path / "w.safetensors", tensors, {"epoch": 3, "nested": {"x": [1, 2]}})
    loaded, meta = load_tensors(tmp_path / "w.safetensors")
    assert meta == {"epoch": 3, "nested": {"x": [1, 2]}}
    assert loaded.keys() == tensors.keys()
    for k in tensors:
        assert loaded[k].dtype == tensors[k].dtype and torch.equal(loaded[k], tensors[k])


def test_shared_tensor_is_stored_once_and_restored_as_alias(tmp_path):
    table = torch.randn(500, 64)
    view = table[10:20]  # same storage, other offset: a different tensor
    save_tensors(tmp_path / "w.safetensors", {"q.weight": table, "t.weight": table, "view": view, "other": table.clone()})
    size = (tmp_path / "w.safetensors").stat().st_size
    assert size < 2.2 * table.numel() * 4  # table + its clone, not three copies
    loaded, _ = load_tensors(tmp_path / "w.safetensors")
    assert loaded["q.weight"] is loaded["t.weight"]
    assert torch.equal(loaded["q.weight"], table) and torch.equal(loaded["view"], view)
    assert loaded["other"] is not loaded["q.weight"] and torch.equal(loaded["other"], table)


def test_saved_tensors_are_copies(tmp_path):
    x = torch.ones(3)
    save_tensors(tmp_path / "w.safetensors", {"x": x})
    x += 1  # changing the source after saving does not change the file
    assert torch.equal(load_tensors(tmp_path / "w.safetensors")[0]["x"], torch.ones(3))


def test_append_line_adds_one_line_each(tmp_path):
    log = tmp_path / "log.jsonl"
    append_line(log, '{"a": 1}')
    append_line(log, '{"a": 2}\n')
    assert log.read_text().splitlines() == ['{"a": 1}', '{"a": 2}']
