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
