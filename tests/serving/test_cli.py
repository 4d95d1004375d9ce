"""`defectnas cache` and `defectnas serve` end to end; serve as a real uvicorn process on loopback."""

from __future__ import annotations

import json
import os
import socket
import sys
import time

import httpx
import numpy as np
import pandas as pd
import pytest

from defectnas import DefectClassifier
from defectnas.cli import main
from defectnas.serving.cache import ProductCache

from .live import free_port, serve_process




def test_cache_command_builds_updates_and_refuses_another_model(model_dir, other_model_dir, catalog_csv, tmp_path, capsys):
    out = tmp_path / "cache"
    assert main(["cache", "--model", str(model_dir), "--catalog", str(catalog_csv), "--out", str(out), "--quiet"]) == 0
    assert len(ProductCache(out)) == 60
    assert main(["cache", "--model", str(model_dir), "--catalog", str(catalog_csv), "--out", str(out)]) == 0
    assert "up to date (60 products)" in capsys.readouterr().err
    generation = json.loads((out / "manifest.json").read_text())["generation"]
    assert main(["cache", "--model", str(model_dir), "--catalog", str(catalog_csv), "--out", str(out), "--dtype", "float32"]) == 0
    err = capsys.readouterr().err
    assert "60 products rewritten as a new generation (float32), nothing re-encoded" in err and "up to date" not in err
    assert "converted from float16 to float32, keep float16's rounding (nothing is re-encoded); pass --rebuild" in err  # not "exact"
    assert json.loads((out / "manifest.json").read_text())["generation"] == generation + 1
    assert main(["cache", "--model", str(other_model_dir), "--catalog", str(catalog_csv), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "built by another model" in err and "\n" not in err
    assert main(["serve", "--model", str(other_model_dir), "--cache", str(out), "--quiet"]) == 2
    assert "built by another model" in capsys.readouterr().err


def test_cache_summary_counts_each_kind_of_left_out_row_in_the_right_number(model_dir, tmp_path, capsys):
    """"1 ids with different titles left out" read wrong; an empty id cell was not counted at all."""
    path = tmp_path / "cat.csv"
    pd.DataFrame({"product_id": ["a", "b", "c", "c", "", "e", "f"],
                  "title": ["drill bit", None, "garden hose", "desk lamp", "usb cable", "", "rug"]}).to_csv(path, index=False)
    assert main(["cache", "--model", str(model_dir), "--catalog", str(path), "--out", str(tmp_path / "c")]) == 0
    err = capsys.readouterr().err
    assert (f"{path}: 2 products from 7 rows; 2 rows without a title left out; 1 row without a product id left out; "
            "1 id with different titles left out (ambiguous)") in err
    assert "warning: " + f"{path}: 1 row without a product id (column 'product_id') left out: row 5" in err
    assert main(["cache", "--model", str(model_dir), "--catalog", str(path), "--out", str(tmp_path / "d"), "--invalid-rows", "error"]) == 2
    assert "row 2: empty title" in capsys.readouterr().err
    pd.DataFrame({"product_id": ["a"], "title": ["drill bit"]}).to_csv(path, index=False)
    assert main(["cache", "--model", str(model_dir), "--catalog", str(path), "--out", str(tmp_path / "e")]) == 0
    err = capsys.readouterr().err
    assert f"{path}: 1 product from 1 row\n" in err and f"{tmp_path / 'e'}: 1 product (1 added, 0 changed, 0 removed, 0 kept)" in err


def test_serve_takes_a_body_cap_or_derives_it(model_dir, monkeypatch, capsys):
    import defectnas.serving.app as app_module

    given: list = []
    monkeypatch.setattr(app_module, "run_workers", lambda *a, **k: given.append(a[2]))
    assert main(["serve", "--model", str(model_dir), "--port", "0", "--workers", "2", "--max-body-bytes", "5000", "--quiet"]) == 0
    assert main(["serve", "--model", str(model_dir), "--port", "0", "--workers", "2", "--max-products", "3", "--quiet"]) == 0
    assert given[0].body_limit() == 5000 and given[1].body_limit() == app_module.ServeSettings(max_products=3).body_limit()
    assert main(["serve", "--model", str(model_dir), "--max-body-bytes", "-1", "--quiet"]) == 2
    assert "--max-body-bytes must be 0" in capsys.readouterr().err


def test_serve_runs_a_real_uvicorn_process(model_dir, catalog_csv, tmp_path):
    _serve_and_check(model_dir, catalog_csv, tmp_path, [])


@pytest.mark.slow
def test_serve_with_worker_processes(model_dir, catalog_csv, tmp_path):
    # and on the pure-Python HTTP parser (the default test above runs auto: httptools)
    _serve_and_check(model_dir, catalog_csv, tmp_path, ["--workers", "2", "--http", "h11", "--balance-connections"],
                     also=_keep_alive_clients_end_up_even)


def _keep_alive_clients_end_up_even(base_url: str) -> None:
    """8 keep-alive clients of 2 workers: whatever split the kernel's hash gave them, the fuller worker
    closes connections after answering until each worker holds 4 (by luck alone: 27% of the time)."""
    if not sys.platform.startswith("linux"):
        return
    deadline = time.monotonic() + 120  # both workers up: a worker still loading its model is not balanced against
    pids = set()
    while len(pids) < 2:
        assert time.monotonic() < deadline, f"only worker(s) {pids} answered"
        with httpx.Client(base_url=base_url, trust_env=False, timeout=60) as fresh:  # a new connection: hashed anew
            pids.add(fresh.get("/healthz").json()["worker"]["pid"])
    time.sleep(1.2)  # the earlier requests' connections leave the workers' one-second count
    clients = [httpx.Client(base_url=base_url, trust_env=False, timeout=10) for _ in range(8)]
    try:
        for _ in range(15):  # in turn, as a client pool sends
            answered = [c.get("/healthz").json()["worker"] for c in clients]
        by_worker = {}
        for w in answered:
            by_worker[w["pid"]] = by_worker.get(w["pid"], 0) + 1
        assert answered[0]["workers_up"] == 2, answered  # both claimed their slot of the shared table
        assert sorted(by_worker.values()) == [4, 4], answered
        again = [c.get("/healthz").json()["worker"]["pid"] for c in clients]
        assert again == [w["pid"] for w in answered]  # settled: nobody is closed any more
    finally:
        for c in clients:
            c.close()


def _serve_and_check(model_dir, catalog_csv, tmp_path, extra: list[str], also=None) -> None:
    cache = tmp_path / "cache"
    assert main(["cache", "--model", str(model_dir), "--catalog", str(catalog_csv), "--out", str(cache), "--quiet"]) == 0
    env = {**os.environ, "DEFECTNAS_API_KEY": "k1"}
    with serve_process(["--model", str(model_dir), "--cache", str(cache), *extra], tmp_path / "server.log", env) as (http, port):
        body = {"query": "garden hose", "product_ids": ["p0", "p1", "p2"]}
        assert http.post("/score", json=body).status_code == 401
        r = http.post("/score", json=body, headers={"X-API-Key": "k1"})
        assert r.status_code == 200, r.text
        clf = DefectClassifier.load(model_dir)
        cat = pd.read_csv(catalog_csv).set_index("product_id")
        expected = clf.predict_proba(["garden hose"] * 3, cat.loc[body["product_ids"], "title"].tolist())
        np.testing.assert_allclose([x["defect_probability"] for x in r.json()["results"]], expected, atol=1e-5, rtol=0)
        r = http.post("/score", json={"query": "hose", "product_ids": ["missing"]}, headers={"X-API-Key": "k1"})
        assert r.status_code == 404 and r.json() == {"detail": 'unknown product id(s): "missing"'}
        if also is not None:
            also(f"http://127.0.0.1:{port}")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SO_REUSEPORT spreads connections on Linux only (serve uses it only there)")
def test_worker_listeners_share_the_port_and_the_kernel_spreads_connections_over_them():
    import pickle
    import select

    from defectnas.serving.app import ReusePortListener

    port = free_port()
    listener = ReusePortListener("127.0.0.1", port, 64)
    a, b = pickle.loads(pickle.dumps(listener)), pickle.loads(pickle.dumps(listener))  # as two spawned workers get it
    clients = []
    try:
        assert a.getsockname() == b.getsockname() == ("127.0.0.1", port) and a.proto == socket.IPPROTO_TCP
        clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(32)]
        accepted = {0: 0, 1: 0}
        deadline = time.monotonic() + 5
        while sum(accepted.values()) < 32 and time.monotonic() < deadline:
            for k, sock in enumerate((a, b)):
                if select.select([sock], [], [], 0.01)[0]:
                    sock.accept()[0].close()
                    accepted[k] += 1
        # on one shared socket the first worker to wake would take all 32 (asyncio accepts every pending one);
        # here the kernel hashes each connection to one listener: all on one side has probability 2^-31
        assert sum(accepted.values()) == 32 and min(accepted.values()) > 0, accepted
    finally:
        for sock in (a, b, *clients):
            sock.close()


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("holder", ["plain socket", "another server's reuse-port workers"])
def test_serve_on_a_port_in_use_says_so_in_one_line_and_never_joins_another_server(model_dir, capsys, workers, holder):
    from defectnas.serving.app import listen_reuseport

    port = free_port()
    if holder != "plain socket" and not sys.platform.startswith("linux"):
        pytest.skip("reuse-port groups are what serve --workers makes on Linux only")
    if holder == "plain socket":
        taken = socket.socket()
        taken.bind(("127.0.0.1", port))
        taken.listen()
    else:  # a running `serve --workers N`: a reuse-port bind of ours would join its group and split its traffic
        taken = listen_reuseport("127.0.0.1", port, 16)
    with taken:
        assert main(["serve", "--model", str(model_dir), "--port", str(port), "--workers", str(workers), "--quiet"]) == 2
    out, err = capsys.readouterr()
    assert err.strip().startswith("error: ") and f"cannot listen on 127.0.0.1:{port}" in err and "\n" not in err.strip()
    assert "serving" not in out + err  # refused before the service says where it serves


@pytest.mark.parametrize("port", ["99999", "-1"])
def test_serve_with_a_port_out_of_range_says_so_in_one_line(model_dir, capsys, port):
    assert main(["serve", "--model", str(model_dir), "--port", port, "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: --port must be 0-65535, got {port}"


def test_port_zero_listens_on_a_port_the_system_chose_and_says_which():
    from defectnas.serving.app import open_listeners

    sockets, port = open_listeners("127.0.0.1", 0, workers=2)  # several workers on port 0 share one socket
    try:
        assert port > 0 and sockets[0].getsockname() == ("127.0.0.1", port)
    finally:
        sockets[0].close()


def test_serve_says_when_connection_balancing_cannot_apply(model_dir, monkeypatch, capsys):
    """--balance-connections is not silently ignored: with one worker, or without a fixed --port."""
    import uvicorn

    import defectnas.serving.app as app_module

    started: list[str] = []
    monkeypatch.setattr(uvicorn.Server, "run", lambda self, sockets=None: started.append("one"))
    monkeypatch.setattr(app_module, "run_workers", lambda *a, **k: started.append("workers"))
    assert main(["serve", "--model", str(model_dir), "--port", "0", "--balance-connections"]) == 0
    assert "with --workers 1 it does nothing" in capsys.readouterr().err
    assert main(["serve", "--model", str(model_dir), "--port", "0", "--workers", "2", "--balance-connections"]) == 0
    assert "needs a fixed --port" in capsys.readouterr().err
    assert main(["serve", "--model", str(model_dir), "--port", "0", "--workers", "2"]) == 0
    assert "balance" not in capsys.readouterr().err and started == ["one", "workers", "workers"]


def test_worker_processes_get_a_health_check_long_enough_to_start(model_dir, monkeypatch, capsys):
    """uvicorn's supervisor kills a worker whose health ping goes unanswered for 5 s; a worker still
    importing torch on a busy 2-core machine took longer, and was killed and restarted over and over
    (CI, stop 35: one worker answered for two minutes). serve gives them 60 s unless told otherwise."""
    import defectnas.serving.app as app_module

    given: list[dict] = []
    monkeypatch.setattr(app_module, "run_workers", lambda *a, **k: given.append(k))
    assert main(["serve", "--model", str(model_dir), "--port", "0", "--workers", "2", "--quiet"]) == 0
    assert main(["serve", "--model", str(model_dir), "--port", "0", "--workers", "2", "--worker-healthcheck-s", "2.5", "--quiet"]) == 0
    assert [k["timeout_worker_healthcheck"] for k in given] == [60, 3]  # whole seconds (uvicorn's type), rounded up
    capsys.readouterr()
    assert main(["serve", "--model", str(model_dir), "--workers", "2", "--worker-healthcheck-s", "0"]) != 0
    assert "--worker-healthcheck-s must be > 0, got 0" in capsys.readouterr().err
