"""Keeping keep-alive connections spread evenly over the processes of ``serve --workers N``.

Why: each worker listens on a socket of its own (``SO_REUSEPORT``) and the kernel hashes every
new connection to one of them. A search engine's client pool opens its keep-alive connections
once and they stay where they landed, so 8 connections over 2 workers split 4–4 only by luck
(C(8,4)/2⁸ = 27% of the time; 5–3 or worse otherwise), and the requests of the fuller worker
wait longer: at 8 clients the p99 latency is that worker's (README, "Serving").

How: each worker counts the connections that sent it a request in the last ``window_s``
seconds and writes the count into its slot of a small table that all workers memory-map. A
worker holding more than its share — more than ⌈total / N⌉ — answers the request in hand with
``Connection: close``; the client opens a new connection (HTTP/1.1 clients do this on their own),
which the kernel hashes again. Only a worker above its share sheds, so a balanced split is left
alone, and a 5–3 split is 4–4 after one or a few reconnects. This is the idea of gRPC's and
Envoy's maximum connection age, aimed at the fuller worker instead of every connection in turn.
"""

from __future__ import annotations

import fcntl
import math
import os
import tempfile
import time
from pathlib import Path

import numpy as np

SLOTS = 256  # rows of the table: more than any sensible --workers, restarts included
STALE_WINDOWS = 3  # a slot not written for this many windows counts as a worker with no connections


def create_table(directory: str | None = None) -> Path:
    """A new, zeroed table file (SLOTS × 3 int64: pid, connections, updated at in ms); in
    ``/dev/shm`` where there is one (memory, not disk). The caller deletes it."""
    directory = directory or ("/dev/shm" if os.path.isdir("/dev/shm") else None)
    fd, name = tempfile.mkstemp(prefix="defectnas-balance-", suffix=".bin", dir=directory)
    with os.fdopen(fd, "wb") as f:
        f.write(bytes(SLOTS * 3 * 8))
    return Path(name)


class ConnectionBalancer:
    """One worker's view of the table at ``path`` (:func:`create_table`), for ``workers`` workers.

    :meth:`should_close` is called once per request with its client address (host, port: one
    connection) and says whether to answer it with ``Connection: close``. ``pid`` names this
    worker's slot (default: this process); a slot left by a dead worker is reused."""

    def __init__(self, path: str | Path, workers: int, window_s: float = 1.0, pid: int | None = None) -> None:
        self.path, self.workers, self.window_s = Path(path), max(1, workers), window_s
        self.pid = os.getpid() if pid is None else pid
        self.table = np.memmap(self.path, dtype=np.int64, mode="r+", shape=(SLOTS, 3))
        self.slot = self._claim()
        self.seen: dict[tuple, float] = {}  # client address -> last request (time.monotonic, seconds)
        self.pruned_at = 0.0
        self.closed = 0  # connections this worker asked to close (for /healthz)

    def _claim(self) -> int:
        """This worker's row: its own, else a free one or one whose process is gone (under a file lock)."""
        with open(self.path, "rb") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            pids = self.table[:, 0]
            for candidates in (np.flatnonzero(pids == self.pid), np.flatnonzero(pids == 0)):
                if len(candidates):
                    slot = int(candidates[0])
                    break
            else:
                slot = next((int(i) for i in range(SLOTS) if not _alive(int(pids[i]))), 0)
            self.table[slot] = (self.pid, 0, 0)
            self.table.flush()
        return slot

    def connections(self) -> int:
        """Connections that sent this worker a request in the last window."""
        return len(self.seen)

    def shares(self, now: float | None = None) -> tuple[int, int]:
        """(workers up, connections of all workers) as the table says at ``now`` (time.monotonic, s).

        Workers up are those that have claimed a slot (at most ``workers``): while another is still
        loading its model, or was never restarted, the connections it would take have nowhere else
        to go. A slot not written for STALE_WINDOWS windows adds no connections."""
        now_ms = int((time.monotonic() if now is None else now) * 1000)
        claimed = self.table[:, 0] != 0
        fresh = claimed & (now_ms - self.table[:, 2] <= STALE_WINDOWS * self.window_s * 1000)
        return max(1, min(self.workers, int(np.count_nonzero(claimed)))), int(self.table[fresh, 1].sum())

    def should_close(self, client: tuple | None, now: float | None = None) -> bool:
        """Record a request of ``client``; True when this worker holds more than its share of the
        connections of the workers that are up (and more than one), so this connection should be
        closed after its answer. It is then forgotten: its client's next connection is counted where it lands."""
        if client is None:
            return False
        now = time.monotonic() if now is None else now
        self.seen[client] = now
        if now - self.pruned_at > self.window_s / 10:
            horizon = now - self.window_s
            self.seen = {c: t for c, t in self.seen.items() if t >= horizon}
            self.pruned_at = now
        mine, now_ms = len(self.seen), int(now * 1000)
        self.table[self.slot, 1] = mine
        self.table[self.slot, 2] = now_ms
        up, total = self.shares(now)
        if mine > 1 and mine > math.ceil(total / up):
            del self.seen[client]
            self.table[self.slot, 1] = mine - 1
            self.closed += 1
            return True
        return False


class BalanceConnections:
    """ASGI middleware: adds ``Connection: close`` to the answer when the balancer says so."""

    def __init__(self, app, balancer: ConnectionBalancer) -> None:
        self.app, self.balancer = app, balancer

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or not self.balancer.should_close(scope.get("client")):
            await self.app(scope, receive, send)
            return

        async def send_closing(message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), (b"connection", b"close")]}
            await send(message)

        await self.app(scope, receive, send_closing)


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
