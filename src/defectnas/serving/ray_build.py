"""Encoding a large catalogue's titles on a Ray cluster (``defectnas cache --ray-address``).

Why: the title tower is the whole cost of a cache build (~100–200 products/s per core for
``train``'s default model), so a catalogue of millions of products wants many cores. The build
itself stays where it is (:func:`~.cache.build_cache`: which products to encode, the memory-mapped
generation written atomically); only the encoding moves: the titles to encode are cut into chunks
of whole batches (``batch_size`` titles, the batches a local build would encode) and Ray actors
— one per CPU of the cluster, each with its own copy of the model, one torch thread — encode
them with the same :func:`~.encoding.encode_titles` and send back arrays already in the cache's
dtype. The driver writes them into the new generation in catalogue order, so the cache is the one
a local build writes (``tests/serving/test_ray_build.py`` checks it is equal).

The model travels as bytes through Ray's object store (its directory's files, not a path), so
workers need defectnas installed but no shared file system.
"""

from __future__ import annotations

from collections import deque
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from ..errors import ConfigError

CHUNK_BATCHES = 4  # batches of titles per Ray task (bounds each result's size: ~20 MB for train's default model)
MODEL_FILES_SKIPPED = ("checkpoint.safetensors",)  # in a model directory, but not needed to load it


class TitleEncoder:
    """A model loaded from its directory's files (bytes), encoding chunks of titles; runs as a Ray actor."""

    def __init__(self, files: dict[str, bytes], threads: int = 1) -> None:
        import tempfile

        import torch

        from ..estimator import DefectClassifier

        if threads:
            torch.set_num_threads(threads)
        # removed as soon as the model is loaded (it is then in memory): Ray ends its actors with a
        # kill, so a folder kept for the actor's life was never cleaned up and piled up in /tmp
        with tempfile.TemporaryDirectory(prefix="defectnas-model-") as folder:
            for name, data in files.items():
                (Path(folder) / name).write_bytes(data)
            self.clf = DefectClassifier.load(folder)
        self.clf.model_.eval()

    def encode(self, titles: list[str], batch_size: int, dtype: str) -> tuple:
        """Encodings of normalised ``titles`` in batches of ``batch_size``, as (vector, tokens, mask) in ``dtype``."""
        from .encoding import encode_titles

        parts = [encode_titles(self.clf, titles[i : i + batch_size], normalized=True) for i in range(0, len(titles), batch_size)]
        joined = [None if parts[0][k] is None else np.concatenate([p[k] for p in parts]) for k in range(3)]
        vector, tokens, mask = joined
        return vector.astype(dtype), None if tokens is None else tokens.astype(dtype), mask


def check_reachable(address: str, timeout: float = 5.0) -> None:
    """ConfigError at once when a ``host:port`` or ``ray://host:port`` address refuses TCP connections
    (``ray.init`` would retry for minutes); ``auto`` and ``local`` are left to Ray."""
    import socket

    if address in ("auto", "local"):
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"--ray-address {address}: expected auto, local, host:port or ray://host:port")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as e:
        raise ConfigError(f"--ray-address {address}: cannot connect to a Ray cluster ({e.strerror or e})") from None


def model_files(model_dir: str | Path) -> dict[str, bytes]:
    """The files of a model directory (what ``DefectClassifier.load`` reads), by name."""
    return {p.name: p.read_bytes() for p in Path(model_dir).iterdir() if p.is_file() and p.name not in MODEL_FILES_SKIPPED}


class RayTitleEncoder:
    """Ray actors encoding chunks of titles, at most two chunks in flight per actor, results in submission order.

    Connects to ``address`` (``auto``, ``ray://host:port``; ``local`` starts a local Ray) unless Ray
    is already initialised (the tests start ``ray.init(num_cpus=2)``); ``actors`` 0: one per CPU
    of the cluster."""

    def __init__(self, address: str, model_dir: str | Path, actors: int = 0) -> None:
        try:
            import ray
        except ImportError:
            raise ConfigError("--ray-address needs Ray: pip install 'defectnas[ray]'") from None
        self.ray = ray
        if not ray.is_initialized():
            check_reachable(address)
            try:
                ray.init(address=None if address == "local" else address, ignore_reinit_error=True, log_to_driver=False,
                         include_dashboard=False)
            except (ConnectionError, ValueError, RuntimeError) as e:
                raise ConfigError(f"--ray-address {address}: cannot connect to a Ray cluster ({type(e).__name__}: {e})") from None
        n = actors or max(1, int(ray.cluster_resources().get("CPU", 1)))
        files = ray.put(model_files(model_dir))
        remote = ray.remote(num_cpus=1)(TitleEncoder)
        self.actors = [remote.remote(files) for _ in range(n)]

    def map(self, chunks: Iterable[tuple[np.ndarray, list[str]]], batch_size: int, dtype: str) -> Iterator[tuple[np.ndarray, tuple]]:
        """For each (rows, titles) chunk: (rows, (vector, tokens, mask)), in order."""
        pending: deque = deque()
        for turn, (rows, titles) in enumerate(chunks):
            pending.append((rows, self.actors[turn % len(self.actors)].encode.remote(titles, batch_size, dtype)))
            if len(pending) >= 2 * len(self.actors):
                rows, ref = pending.popleft()
                yield rows, self.ray.get(ref)
        while pending:
            rows, ref = pending.popleft()
            yield rows, self.ray.get(ref)

    def shutdown(self) -> None:
        for actor in self.actors:
            self.ray.kill(actor)
        self.actors = []
