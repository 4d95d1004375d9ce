"""Live cache updates: a running ``serve`` picks up the cache generation ``defectnas cache`` writes.

Why: the catalogue changes every day, and restarting the service to see it drops requests and
warm state (query LRU, loaded model). ``defectnas cache`` already writes each update as a new
generation directory and only then replaces ``manifest.json`` atomically (see :mod:`.cache`),
so a reader sees either the old or the new cache, never a mix. :class:`CacheWatcher` polls the
manifest every ``interval`` seconds (a ``stat``; the manifest is read only when it changed),
opens a new generation off the event loop (reading ``ids.json`` and building the id index can
take a while for a large catalogue), checks that the serving model built it, and then replaces
the scorer's cache *on the event loop*. A cached-product request reads the scorer's cache once
and computes without yielding (see :mod:`.app`), so every request is answered wholly from one
generation: the old one if it started before the swap, the new one after. The old generation's
files are deleted by the build, but its memory maps stay valid until the last request using them
ends (POSIX unlink semantics).

A generation that cannot be opened (already replaced by a later one, or half written by a
non-defectnas tool) or that another model built is not served, nor is anything while
``manifest.json`` is missing or unreadable: the watcher keeps the current cache, logs one
warning line, counts a failure (``/metrics``), says why in ``refused`` (``/healthz``) and tries
again at the next change; ``refused`` clears when the newest generation on disk is served again.
With ``serve --workers N`` each process watches for itself.
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

from ..data._common import counted
from .cache import MANIFEST, CacheError, ProductCache, read_manifest

log = logging.getLogger("defectnas.serve")


class CacheWatcher:
    """Swaps ``scorer.cache`` to each new generation written into its directory.

    ``scorer``: a :class:`~.scorer.Scorer` or :class:`~.onnx_backend.OnnxScorer` with a cache
    and an ``open_cache(directory)`` method (opens and checks a cache, CacheError when it is not
    this model's). ``interval``: seconds between checks of ``manifest.json`` (> 0)."""

    def __init__(self, scorer, interval: float) -> None:
        if scorer.cache is None:
            raise ValueError("CacheWatcher needs a scorer with a cache")
        if interval <= 0:
            raise ValueError(f"interval must be > 0 seconds, got {interval}")
        self.scorer = scorer
        self.directory = Path(scorer.cache.directory)
        self.interval = interval
        self.reloads = 0  # generations swapped in
        self.failures = 0  # new generations that could not be served (kept the current one)
        self._seen = self._stamp()  # the manifest as last looked at
        self._refused: str | None = None  # generation_dir last refused (warned once)

    def _stamp(self) -> tuple | None:
        try:
            st = os.stat(self.directory / MANIFEST)
        except OSError:
            return None
        return st.st_ino, st.st_mtime_ns, st.st_size  # an atomic replace gives a new inode

    def poll(self) -> ProductCache | None:
        """A newly written generation, opened and checked, or None (nothing new, or not servable).
        Blocking (file reads): run it off the event loop."""
        stamp = self._stamp()
        if stamp == self._seen:
            return None
        if stamp is None:  # removed (or being replaced by hand): nothing to serve from it, said until it is back
            self._seen = None
            self._refuse(f"{self.directory / MANIFEST}: missing")
            return None
        try:
            manifest = read_manifest(self.directory)
            if manifest.get("generation_dir") == self.scorer.cache.manifest.get("generation_dir"):
                self._seen = stamp
                self._refused = None  # the newest generation on disk is the served one (a damaged manifest was restored)
                return None
            cache = self.scorer.open_cache(self.directory)
            if (cache.locales is None) != (self.scorer.cache.locales is None):  # the published schema says which
                raise CacheError(f"{self.directory}: the new generation is {'not ' if cache.locales is None else ''}keyed by "
                                 "product_locale and the served one is the other way; restart serve to change that")
        except CacheError as e:
            self._refuse(str(e))
            self._seen = stamp  # a refused generation is not retried until the manifest changes again
            return None
        self._seen = stamp
        return cache

    def _refuse(self, why: str) -> None:
        """Count a new generation (or manifest state) that is not served; warn once per reason."""
        self.failures += 1
        if why != self._refused:
            log.warning("cache update not served, still serving generation %s: %s", self.scorer.cache.generation, why)
            self._refused = why

    @property
    def refused(self) -> str | None:
        """Why the newest generation on disk is not served (None when it is): for ``/healthz``."""
        return self._refused

    def swap(self, cache: ProductCache) -> None:
        """Serve ``cache`` from now on (call on the event loop, between requests)."""
        old = self.scorer.cache
        self.scorer.cache = cache
        self.reloads += 1
        self._refused = None
        log.warning("serving cache generation %s (%s; was generation %s)", cache.generation, counted(len(cache), "product"), old.generation)

    def check(self) -> bool:
        """Poll and swap in one call (tests, or a caller without an event loop); True when swapped."""
        cache = self.poll()
        if cache is not None:
            self.swap(cache)
        return cache is not None

    async def run(self) -> None:
        """Poll every ``interval`` seconds until cancelled; opening happens in a worker thread,
        the swap on the loop."""
        import anyio

        while True:
            await asyncio.sleep(self.interval)
            try:
                cache = await anyio.to_thread.run_sync(self.poll)
            except Exception as e:  # noqa: BLE001 — a watcher that dies would silently stop updates
                self.failures += 1
                log.warning("cache watcher: %s: %s", type(e).__name__, e)
                continue
            if cache is not None:
                self.swap(cache)
