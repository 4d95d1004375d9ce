"""Behaviour under overload: a bounded number of requests at once, a bounded queue, a deadline.

Why: without a bound, a server offered more than it can compute answers everyone later and
later (latency grows with the backlog) until clients time out; with one, the requests it can
serve get their usual latency and the rest are told at once to come back (503 with
``Retry-After``), which load balancers and clients handle. :class:`Admission` lets ``concurrency``
requests be served and ``queue`` more wait (first come, first served); one more is refused
without waiting. :class:`OverloadGuard` (ASGI middleware) applies it to every route but the
probes (``/healthz``, ``/metrics`` stay answerable under load), and a per-request deadline:
a request not answered ``timeout`` seconds after it arrived gets 503 (sent by a timer, so a
request costs no extra task); work already running is not interrupted (a computation cannot be),
it finishes holding its slot, so the bound on work in progress holds, and its answer is dropped.

Cached-product requests compute on the event loop (see :mod:`.app`), so after taking its slot a
request yields once: requests that arrived together are all admitted or refused before the
first of them computes, and a refusal waits at most for the computation running when it arrived.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque

PROBES = ("/healthz", "/metrics")  # never queued nor refused: health checks and scrapes must work under load
RETRY_AFTER_S = 1  # the Retry-After header of a 503, in seconds


class Overloaded(Exception):
    """Every slot is taken and the queue is full."""


class Admission:
    """At most ``concurrency`` requests at once and ``queue`` more waiting (FIFO); beyond, :class:`Overloaded`.
    ``concurrency`` 0: no bound (requests are only counted)."""

    def __init__(self, concurrency: int = 0, queue: int = 0) -> None:
        if concurrency < 0 or queue < 0:
            raise ValueError(f"need concurrency >= 0 (0: no bound) and queue >= 0, got {concurrency} and {queue}")
        self.concurrency = concurrency  # requests served at once (0: no bound)
        self.queue = queue  # requests waiting for a slot at most
        self.active = 0  # slots taken
        self.rejected = 0  # requests refused because the queue was full
        self.timed_out = 0  # requests answered 503 at their deadline
        self._waiters: deque[asyncio.Future] = deque()

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    async def acquire(self) -> None:
        """Take a slot, waiting in line if all are taken; Overloaded at once if the line is full."""
        if not self.concurrency or (self.active < self.concurrency and not self._waiters):
            self.active += 1
            return
        if len(self._waiters) >= self.queue:
            self.rejected += 1
            raise Overloaded
        future = asyncio.get_running_loop().create_future()
        self._waiters.append(future)
        try:
            await future  # resolved by release(), which hands its slot over
        except BaseException:
            if future.done() and not future.cancelled():
                self.release()  # the slot arrived together with the cancellation: pass it on
            else:
                try:
                    self._waiters.remove(future)
                except ValueError:
                    pass
            raise

    def release(self) -> None:
        """Give the slot to the first in line, else free it."""
        while self._waiters:
            future = self._waiters.popleft()
            if not future.done():
                future.set_result(None)
                return
        self.active -= 1


class OverloadGuard:
    """ASGI middleware: :class:`Admission` and a per-request deadline (when ``timeout`` > 0)."""

    def __init__(self, app, admission: Admission, timeout: float = 0.0, probes: tuple[str, ...] = PROBES) -> None:
        self.app, self.admission, self.timeout, self.probes = app, admission, timeout, probes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["path"] in self.probes:
            return await self.app(scope, receive, send)
        admission, loop = self.admission, asyncio.get_running_loop()
        deadline = loop.time() + self.timeout if self.timeout > 0 else None
        try:
            async with asyncio.timeout_at(deadline):
                await admission.acquire()
        except Overloaded:
            return await unavailable(send, f"server overloaded: {admission.concurrency} request{'s' if admission.concurrency != 1 else ''} in progress and "
                                           f"{admission.queue} waiting; retry after {RETRY_AFTER_S} s")
        except TimeoutError:
            return await self._timed_out(send)
        if admission.concurrency:
            try:
                await asyncio.sleep(0)  # requests that arrived together are admitted or refused before this one computes
            except BaseException:
                admission.release()
                raise
        started = dropped = False
        answer: asyncio.Task | None = None

        async def guarded_send(message) -> None:
            nonlocal started
            if dropped:
                return  # the deadline has answered
            started = started or message["type"] == "http.response.start"
            await send(message)

        def at_deadline() -> None:  # runs on the loop between two steps of the work, so it cannot interleave a send
            nonlocal dropped, answer
            if not started:
                dropped = True
                answer = loop.create_task(self._timed_out(send))

        timer = loop.call_at(deadline, at_deadline) if deadline is not None else None  # a timer, not a task: no cost unless it fires
        try:
            await self.app(scope, receive, guarded_send)  # work already running is not interrupted: it finishes, holding its slot
        finally:
            if timer is not None:
                timer.cancel()
            admission.release()
            if answer is not None:
                await answer

    async def _timed_out(self, send) -> None:
        self.admission.timed_out += 1
        await unavailable(send, f"request timed out after {self.timeout * 1000:g} ms; retry after {RETRY_AFTER_S} s")


async def unavailable(send, detail: str) -> None:
    """A one-line 503 with Retry-After."""
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": 503,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"retry-after", str(RETRY_AFTER_S).encode())]})
    await send({"type": "http.response.body", "body": body})
