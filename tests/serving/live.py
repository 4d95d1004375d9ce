"""A real uvicorn server on loopback in a thread, with a scorer that can be made slow (overload and schema tests)."""

from __future__ import annotations

import contextlib
import socket
import threading
import time

import uvicorn

from defectnas.serving.app import SERVE_LOOP, ServeSettings, create_app
from defectnas.serving.scorer import Scorer


class SlowScorer(Scorer):
    """A scorer whose every request takes ``delay`` seconds more (time.sleep: blocks the loop for cached ids, as real compute does)."""

    delay = 0.0

    def score_ids(self, *args, **kwargs):
        time.sleep(self.delay)
        return super().score_ids(*args, **kwargs)

    def score_titles(self, *args, **kwargs):
        time.sleep(self.delay)
        return super().score_titles(*args, **kwargs)


@contextlib.contextmanager
def serving(model_dir, cache_dir=None, delay: float = 0.0, **settings):
    """A real uvicorn server on 127.0.0.1 and a free port, in a thread; yields (base url, server, scorer)."""
    scorer = SlowScorer.load(model_dir, cache_dir)
    app = create_app(model_dir, cache_dir, ServeSettings(**{"title_workers": 8, **settings}), scorer=scorer)
    scorer.delay = delay
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", timeout_graceful_shutdown=10,
                                          loop=SERVE_LOOP))  # as serve runs it
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "server did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}", server, scorer
    finally:
        server.should_exit = True
        thread.join(20)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve_process(args: list[str], log_path, env: dict | None = None, timeout: float = 60):
    """``defectnas serve ARGS --port P --quiet`` as a real process; waits for ``/healthz``, yields
    (an httpx client on its base url, the port); stops the process after. Its output goes to
    ``log_path`` (a file, not a pipe nobody reads), whose tail a failed start shows."""
    import os
    import subprocess
    import sys

    import httpx
    import pytest

    port = free_port()
    log = open(log_path, "w+b")
    proc = subprocess.Popen([sys.executable, "-m", "defectnas.cli", "serve", *args, "--port", str(port), "--quiet"],
                            env=dict(os.environ) if env is None else env, stdout=log, stderr=subprocess.STDOUT)
    http = httpx.Client(base_url=f"http://127.0.0.1:{port}", trust_env=False, timeout=10)  # no proxy for loopback
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if http.get("/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                log.seek(0)
                pytest.fail(f"server did not come up: {log.read().decode(errors='replace')[-2000:]}")
            time.sleep(0.2)
        yield http, port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        http.close()
        log.close()
