"""Atomic file writes and safetensors state storage.

Why: a killed process (Ctrl-C, OOM, SIGKILL) must never leave a half-written model, checkpoint,
cache or log behind. Every file is written to a temporary name beside its target and moved into
place with ``os.replace``, which is atomic on POSIX. Weights are stored as safetensors (never
pickle); tensors that share memory (a tied embedding table) are stored once and re-linked.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save

from .errors import DataError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _temp_beside(path: Path) -> tuple[int, str]:
    """A temporary file next to ``path`` with the permissions a plain ``open`` would give."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.chmod(tmp, 0o666 & ~_umask())
    return fd, tmp


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    path = Path(path)
    fd, tmp = _temp_beside(path)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def append_line(path: str | Path, line: str) -> None:
    """Append one line and fsync: a log whose finished lines survive a kill."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(line.rstrip("\n") + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_json(path: str | Path, error: type[Exception], missing: str) -> Any:
    """The JSON in ``path``; ``error`` in one line when it is absent (``missing`` says what to do)
    or unreadable / not JSON (naming the file). The one reader of our own JSON files
    (cache manifests, ONNX exports, model configs), so they fail alike."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, NotADirectoryError):  # the second: a file given where its folder belongs (model.csv/config.json)
        raise error(missing) from None
    except (OSError, ValueError) as e:  # json.JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise error(f"{path}: unreadable ({e})") from None


def not_a_model_directory(directory: str | Path) -> str:
    """The one-line reason ``directory`` cannot be loaded as a model: an ONNX export (it holds
    ``export.json``, written by ``defectnas export``) is named as one, with what takes it; so is
    a file (a table given as --teacher or --model: reading its config.json was a NotADirectoryError)."""
    d = Path(directory)
    if (d / "export.json").is_file():
        return (f"{d}: an ONNX export (defectnas export), not a model directory: serve it with `defectnas serve --backend onnx "
                f"--model {d}`; this command takes the model directory it was exported from")
    if d.is_file():
        return f"{d}: not a model directory (a file; give the folder a model was saved in)"
    return f"{d}: not a model directory (no config.json)"


def check_model_directory(directory: str | Path) -> Path:
    """``directory`` as a Path when it holds a model's ``config.json``; DataError
    (:func:`not_a_model_directory`) otherwise. For checking a model directory before the data is
    read (``train --teacher``) rather than after."""
    d = Path(directory)
    if not (d / "config.json").is_file():
        raise DataError(not_a_model_directory(d))
    return d


def save_tensors(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, Any] | None = None) -> None:
    """Write tensors (+ JSON metadata) as one safetensors file, atomically; shared tensors stored once."""
    path = Path(path)
    unique: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    seen: dict[tuple[int, int, tuple], str] = {}
    for name, t in tensors.items():
        key = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape)) if t.numel() else None
        if key is not None and key in seen:
            aliases[name] = seen[key]
            continue
        if key is not None:
            seen[key] = name
        unique[name] = t.detach().cpu().contiguous().clone()
    meta = {"aliases": json.dumps(aliases), "metadata": json.dumps(metadata or {})}
    atomic_write_bytes(path, save(unique, metadata=meta))


def hash_tensors(h, tensors: dict[str, torch.Tensor]) -> None:
    """Feed ``tensors`` into ``h`` (a hashlib object), sorted by name: each one's name, dtype, shape
    and bytes — so equal digests mean equal tensors, whatever process or file they came from."""
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"\0{name}:{t.dtype}:{tuple(t.shape)}\0".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")


def tensors_digest(tensors: dict[str, torch.Tensor]) -> str:
    """``sha256:<hex>`` of ``tensors`` (:func:`hash_tensors`): equal digests, equal tensors."""
    h = hashlib.sha256()
    hash_tensors(h, tensors)
    return "sha256:" + h.hexdigest()


def load_metadata(path: str | Path) -> dict[str, Any]:
    """The JSON metadata of a file written by :func:`save_tensors`, without reading its tensors."""
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    return json.loads(meta.get("metadata", "{}"))


def load_tensors(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a file written by :func:`save_tensors`: (tensors with aliases restored, metadata)."""
    with safe_open(str(path), framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
        meta = f.metadata() or {}
    for alias, target in json.loads(meta.get("aliases", "{}")).items():
        tensors[alias] = tensors[target]
    return tensors, json.loads(meta.get("metadata", "{}"))
