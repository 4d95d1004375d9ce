"""ONNX export and the onnxruntime scorer: parity with PyTorch, int8 and its AP-loss gate, serving."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from fastapi.testclient import TestClient

pytest.importorskip("onnxruntime")

from defectnas import DefectClassifier  # noqa: E402
from defectnas.errors import ConfigError, DataError  # noqa: E402
from defectnas.serving.app import ServeSettings, create_app  # noqa: E402
from defectnas.serving.cache import CacheError, build_cache  # noqa: E402
from defectnas.serving.catalog import read_catalog  # noqa: E402
from defectnas.serving.encoding import encode_titles  # noqa: E402
from defectnas.serving.onnx_backend import OnnxScorer, QuantizationLossError, check_ap_loss  # noqa: E402
from defectnas.serving.onnx_export import ap_loss, describe_ap_loss, export_onnx, read_export  # noqa: E402
from defectnas.serving.scorer import load_scorer  # noqa: E402

from conftest import TINY  # noqa: E402  (tests/conftest.py: tests/ is on sys.path)
from .conftest import catalog_frame  # noqa: E402
from .live import serve_process  # noqa: E402

QUERIES = ["cordless drill", "white paint", "garden hose with a very long query text", "drill"]  # one a single word piece
TITLES = ["acme drill", "bolt paint set 2", "crest ladder large steel", "lamp", "forge cordless drill with bits and case"] * 7  # 35


@pytest.fixture(scope="module")
def matching_fitted(synthetic_split):
    """The tiny model of ``fitted`` with the matching layer (title token states in the score)."""
    return DefectClassifier(**{**TINY, "variant": "dl-gs", "epochs": 2, "matching": True}).fit(synthetic_split["train"], synthetic_split["valid"])


@pytest.fixture(scope="module", params=["fitted", "matching_fitted"])
def exported(request, tmp_path_factory):
    clf = request.getfixturevalue(request.param)
    root = tmp_path_factory.mktemp(f"onnx_{request.param}")
    clf.save(root / "model")
    spec = export_onnx(root / "model", root / "export")
    return clf, root, spec


def test_fp32_scores_match_pytorch_within_1e4(exported):
    clf, root, spec = exported
    scorer = OnnxScorer.load(root / "export")
    assert spec["precision"] == "fp32" and spec["parity"]["max_abs_diff"] <= 1e-4
    assert spec["matching"] == bool(clf.model_config_.matching)
    for query in QUERIES:  # several query lengths, 35 products: the axes are dynamic
        np.testing.assert_allclose(scorer.score_titles(query, TITLES), clf.predict_proba([query] * len(TITLES), TITLES), atol=1e-4, rtol=0)
    # from title encodings as the cache holds them (PyTorch), one and many products
    arrays = encode_titles(clf, TITLES)
    for n in (1, 3, 35):
        sub = type(arrays)(*(None if a is None else a[:n] for a in arrays))
        np.testing.assert_allclose(scorer.score_arrays("cordless drill", sub), clf.predict_proba(["cordless drill"] * n, TITLES[:n]), atol=1e-4, rtol=0)


def test_a_late_interaction_model_exports_within_1e4(synthetic_split, tmp_path):
    """The late interaction (every query token against every title token) exports too: the served
    graph is score_one_query, and its scores equal PyTorch's over several query lengths and
    product counts, from raw titles and from cached encodings."""
    clf = DefectClassifier(**{**TINY, "variant": "dl-gs", "epochs": 1, "late_interaction": True}).fit(synthetic_split["train"], synthetic_split["valid"])
    clf.save(tmp_path / "model")
    spec = export_onnx(tmp_path / "model", tmp_path / "export")
    assert spec["parity"]["max_abs_diff"] <= 1e-4 and spec["needs_title_tokens"]
    scorer = OnnxScorer.load(tmp_path / "export")
    for query in QUERIES:
        np.testing.assert_allclose(scorer.score_titles(query, TITLES), clf.predict_proba([query] * len(TITLES), TITLES), atol=1e-4, rtol=0)
    arrays = encode_titles(clf, TITLES)
    for n in (1, 35):
        sub = type(arrays)(*(None if a is None else a[:n] for a in arrays))
        np.testing.assert_allclose(scorer.score_arrays("drill", sub), clf.predict_proba(["drill"] * n, TITLES[:n]), atol=1e-4, rtol=0)


def test_export_files_are_json_and_onnx(exported):
    _, root, spec = exported
    names = {p.name for p in (root / "export").iterdir()}
    assert {"export.json", "query.onnx", "score.onnx", "title.onnx", "tokenizer.json", "calibration.json"} <= names
    assert not any(n.endswith((".pkl", ".pt", ".pickle")) for n in names)
    saved = json.loads((root / "export" / "export.json").read_text())
    assert saved == spec and saved["threshold"] == pytest.approx(exported[0].threshold_)
    assert saved["calibration"]["method"] == exported[0].calibrator_.method
    import onnx

    for name in ("query.onnx", "score.onnx"):  # the product count and lengths are dynamic axes
        graph = onnx.load(str(root / "export" / name)).graph
        dims = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in graph.input}
        if name == "query.onnx":
            assert dims["ids"] == ["batch", "length"]
        else:
            assert dims["t_vector"][0] == "products" and dims["q_tokens"][1] == "query_length"


def test_int8_runs_and_its_ap_loss_is_saved(fitted, synthetic_split, tmp_path):
    fitted.save(tmp_path / "model")
    spec = export_onnx(tmp_path / "model", tmp_path / "int8", int8=True, eval_pairs=synthetic_split["test"])
    q = spec["quantization"]
    assert spec["precision"] == "int8" and read_export(tmp_path / "int8") == spec
    assert q["pairs"] == len(synthetic_split["test"]) and q["ap_loss"] == pytest.approx(q["ap_torch"] - q["ap_onnx"])
    assert abs(q["ap_loss"]) < 0.05  # dynamic int8 keeps the tiny model's ranking
    # its noise: a paired bootstrap over the test split's queries (a loss on a few hundred pairs is not exact)
    assert q["queries"] == synthetic_split["test"]["query"].nunique() and q["resamples"] == 1000
    assert q["ci_low"] <= q["ap_loss"] <= q["ci_high"]
    scorer = OnnxScorer.load(tmp_path / "int8", max_ap_loss=max(q["ap_loss"], 0) + 0.01)
    probs = scorer.score_titles("cordless drill", TITLES)
    assert probs.shape == (len(TITLES),) and np.all((probs >= 0) & (probs <= 1))
    again = ap_loss(fitted, scorer, synthetic_split["test"])  # the function export uses, deterministic
    assert again["ap_loss"] == pytest.approx(q["ap_loss"], abs=1e-12)
    with pytest.raises(DataError, match="--data"):
        export_onnx(tmp_path / "model", tmp_path / "int8b", int8=True)


def test_the_int8_loss_is_said_with_its_interval_and_a_caveat_on_few_queries():
    measured = {"ap_loss": 0.004, "ap_torch": 0.351, "ap_onnx": 0.347, "ci_low": -0.002, "ci_high": 0.011, "queries": 20}
    line = describe_ap_loss(measured)
    assert line.startswith("int8 AP loss +0.0040 (AP 0.3510 → 0.3470); 95% interval [-0.0020, +0.0110] over 20 queries")
    assert "fewer than 50 queries" in line
    assert "fewer than" not in describe_ap_loss({**measured, "queries": 50})
    assert "over 1 query, paired bootstrap" in describe_ap_loss({**measured, "queries": 1})  # not "1 queries"


def test_int8_over_the_bound_is_refused_unless_allowed(fitted, synthetic_split, tmp_path, capsys):
    fitted.save(tmp_path / "model")
    export_onnx(tmp_path / "model", tmp_path / "int8", int8=True, eval_pairs=synthetic_split["test"])
    spec_path = tmp_path / "int8" / "export.json"
    spec = json.loads(spec_path.read_text())
    spec["quantization"]["ap_loss"] = 0.05  # as if quantization had cost 5 AP points
    spec_path.write_text(json.dumps(spec))
    with pytest.raises(QuantizationLossError, match="0.0500 AP"):
        OnnxScorer.load(tmp_path / "int8")
    with pytest.raises(QuantizationLossError):
        create_app(tmp_path / "int8", settings=ServeSettings(backend="onnx"))
    from defectnas.cli import main

    assert main(["serve", "--model", str(tmp_path / "int8"), "--backend", "onnx", "--quiet"]) == 2  # one line, exit 2, before binding
    assert re.search(r"loses 0\.0500 AP against its PyTorch model, 95% interval \[[-+]0\.\d{4}, [-+]0\.\d{4}\] over \d+ queries",
                     capsys.readouterr().err)
    assert OnnxScorer.load(tmp_path / "int8", max_ap_loss=0.1).precision == "int8"
    client = TestClient(create_app(tmp_path / "int8", settings=ServeSettings(backend="onnx", allow_int8_loss=True)))
    assert client.get("/healthz").json()["model"].endswith("+onnx-int8")
    with pytest.raises(QuantizationLossError, match="without a measured"):
        check_ap_loss({"precision": "int8", "quantization": None}, 0.01)
    # int8 activations are quantized over the whole batch: micro-batching would make a score depend on its neighbours
    with pytest.raises(ConfigError, match="int8 export quantizes activations"):
        create_app(tmp_path / "int8", settings=ServeSettings(backend="onnx", allow_int8_loss=True, batch_wait_ms=2))
    assert main(["serve", "--model", str(tmp_path / "int8"), "--backend", "onnx", "--allow-int8-loss", "--batch-wait-ms", "2", "--quiet"]) == 2
    assert "--batch-wait-ms: an int8 export" in capsys.readouterr().err


def test_export_says_when_serve_would_refuse_its_int8_loss(model_dir, tmp_path, monkeypatch, capsys):
    """export --int8 ended "serve it with defectnas serve --backend onnx --model DIR" even for a loss
    serve then refused; over serve's default bound the closing line says so and names the flags."""
    from defectnas.cli import main
    from defectnas.serving import onnx_export
    from defectnas.serving.onnx_backend import MAX_INT8_AP_LOSS, serve_advice

    from .conftest import synthetic_pairs

    out = tmp_path / "int8"
    spec = {"precision": "int8", "parity": {}, "source_model": {"name": "model"}, "quantization": {"ap_loss": 0.0251}}
    advice = serve_advice(spec, out)
    assert advice == (f"its AP loss 0.0251 is over serve's default bound {MAX_INT8_AP_LOSS:g}, so serve refuses it: serve the fp32 export, "
                      f"or defectnas serve --backend onnx --model {out} --max-int8-ap-loss 0.026 (or --allow-int8-loss)")
    check_ap_loss(spec, 0.026)  # the bound it names does serve it
    within = {**spec, "quantization": {"ap_loss": MAX_INT8_AP_LOSS}}
    assert serve_advice(within, out) == serve_advice({**spec, "precision": "fp32"}, out) == f"serve it with defectnas serve --backend onnx --model {out}"
    assert "--allow-int8-loss" in serve_advice({**spec, "quantization": None}, out)

    synthetic_pairs(200, seed=3).to_csv(tmp_path / "pairs.csv", index=False)
    monkeypatch.setattr(onnx_export, "export_onnx", lambda *a, **k: spec)  # as if quantization had cost 0.0251 AP
    assert main(["export", "--model", str(model_dir), "--out", str(out), "--int8", "--data", str(tmp_path / "pairs.csv")]) == 0
    closing = capsys.readouterr().err.strip().splitlines()[-1]
    assert closing == f"{out}: ONNX export (int8) of model; {advice}"


def test_serve_onnx_backend_gives_the_torch_probabilities(exported, tmp_path):
    clf, root, _ = exported
    catalog = read_catalog(catalog_frame())[0]
    build_cache(root / "model", catalog, tmp_path / "cache", clf=clf)
    settings = dict(max_products=50)
    torch_client = TestClient(create_app(root / "model", tmp_path / "cache", ServeSettings(**settings)))
    onnx_client = TestClient(create_app(root / "export", tmp_path / "cache", ServeSettings(backend="onnx", **settings)))
    ids = ["p1", "p2", "p30", "p1", "p59"]
    for body in ({"query": "Garden Hose", "product_ids": ids}, {"query": "cordless drill", "titles": TITLES[:6]}):
        a, b = torch_client.post("/score", json=body), onnx_client.post("/score", json=body)
        assert a.status_code == b.status_code == 200, b.text
        pa = [r["defect_probability"] for r in a.json()["results"]]
        pb = [r["defect_probability"] for r in b.json()["results"]]
        np.testing.assert_allclose(pb, pa, atol=1e-4, rtol=0)
        assert [r["is_defect"] for r in b.json()["results"]] == [p >= clf.threshold_ for p in pb]
    health = onnx_client.get("/healthz").json()
    assert health["backend"] == "onnx" and health["model"].endswith("+onnx-fp32") and health["products"] == len(catalog)
    assert health["query_cache"]["misses"] == 2 and health["query_cache"]["hits"] == 0
    assert onnx_client.post("/score", json={"query": "garden hose", "product_ids": ["p3"]}).status_code == 200  # same text once normalised
    assert onnx_client.get("/healthz").json()["query_cache"]["hits"] == 1
    # the same errors as the torch backend
    assert onnx_client.post("/score", json={"query": "hose", "product_ids": ["nope"]}).status_code == 404
    assert onnx_client.post("/score", json={"query": "\u200b", "product_ids": ["p1"]}).status_code == 422
    # the rerank route and /metrics on the onnx backend
    docs = [{"id": "p1"}, TITLES[0], {"id": "p30"}]
    a, b = (c.post("/v1/rerank", json={"query": "garden hose", "documents": docs}) for c in (torch_client, onnx_client))
    assert a.status_code == b.status_code == 200, b.text
    by_index = lambda r: {x["index"]: x["relevance_score"] for x in r.json()["results"]}  # noqa: E731
    np.testing.assert_allclose([by_index(b)[i] for i in range(3)], [by_index(a)[i] for i in range(3)], atol=1e-4, rtol=0)
    metrics = onnx_client.get("/metrics").text
    assert 'backend="onnx"' in metrics and 'defectnas_requests_total{method="POST",route="/v1/rerank",status="200"} 1.0' in metrics


def test_fp32_export_micro_batches_queries_and_scores_as_alone(exported, tmp_path):
    import asyncio

    from defectnas.serving.batching import MicroBatcher

    _, root, _ = exported
    build_cache(root / "model", read_catalog(catalog_frame(30))[0], tmp_path / "cache")
    requests = [("garden hose", ["p1", "p2", "p3"]), ("Cordless  DRILL", ["p4"]), ("garden hose", ["p5", "p1"]),
                ("a much longer query about a desk lamp", ["p6", "p7", "p8"]), ("cordless drill", ["p10", "p4"])]
    alone = OnnxScorer.load(root / "export", tmp_path / "cache")
    expected = [alone.score_ids(q, ids) for q, ids in requests]
    scorer = OnnxScorer.load(root / "export", tmp_path / "cache", query_cache=16)
    passes, session = [], scorer._query

    class Counting:  # records the batch size of every query.onnx run
        def run(self, outputs, feed):
            passes.append(len(feed["ids"]))
            return session.run(outputs, feed)

    scorer._query = Counting()
    batcher = MicroBatcher(scorer, wait=0.05)

    async def together():
        return await asyncio.gather(*(batcher.score_ids(q, ids) for q, ids in requests))

    got = asyncio.run(together())
    assert passes == [3] and (batcher.batches, batcher.requests) == (1, 5)  # 3 distinct queries (of 3 lengths), one padded pass
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g, e, atol=1e-6, rtol=0)
    assert scorer.query_cache.stats()["hits"] == 2 and alone.score_ids("garden hose", ["p1"]) == pytest.approx(got[0][0], abs=1e-6)
    body = {"query": "garden hose", "product_ids": ["p1", "p2"]}
    with TestClient(create_app(root / "export", tmp_path / "cache", ServeSettings(backend="onnx", batch_wait_ms=1))) as client:
        r = client.post("/score", json=body)
        assert r.status_code == 200, r.text
        np.testing.assert_allclose([x["defect_probability"] for x in r.json()["results"]], expected[0][:2], atol=1e-6, rtol=0)
        assert "defectnas_query_batches_total 1.0" in client.get("/metrics").text


def test_backends_refuse_the_wrong_directory(exported, other_model_dir, tmp_path):
    _, root, _ = exported
    with pytest.raises(ConfigError, match="export"):
        load_scorer(root / "model", backend="onnx")
    with pytest.raises(ConfigError, match="--backend onnx"):
        load_scorer(root / "export", backend="torch")
    with pytest.raises(ConfigError, match="backend must be"):
        load_scorer(root / "model", backend="tensorrt")
    build_cache(other_model_dir, read_catalog(catalog_frame(5))[0], tmp_path / "cache")
    with pytest.raises(CacheError, match="another model"):
        OnnxScorer.load(root / "export", tmp_path / "cache")


def test_export_and_serve_commands(model_dir, catalog_csv, tmp_path, capsys):
    """`defectnas export` then `defectnas serve --backend onnx --query-cache 8` as a real uvicorn process."""
    import pandas as pd

    from defectnas.cli import main

    out, cache = tmp_path / "export", tmp_path / "cache"
    assert main(["export", "--model", str(model_dir), "--format", "onnx", "--out", str(out), "--quiet"]) == 0
    assert json.loads(capsys.readouterr().out)["precision"] == "fp32"
    assert main(["export", "--model", str(model_dir), "--out", str(tmp_path / "x"), "--int8", "--quiet"]) == 2
    assert "--int8 needs --data" in capsys.readouterr().err
    from .conftest import synthetic_pairs

    synthetic_pairs(400, seed=3).to_csv(tmp_path / "pairs.csv", index=False)
    assert main(["export", "--model", str(model_dir), "--out", str(tmp_path / "int8"), "--int8", "--data", str(tmp_path / "pairs.csv"),
                 "--test-frac", "0.3", "--quiet"]) == 0
    saved = read_export(tmp_path / "int8")["quantization"]
    assert json.loads(capsys.readouterr().out)["quantization"] == saved
    assert {"ci_low", "ci_high", "queries"} <= set(saved)
    assert 0 < saved["pairs"] < 400 and saved["data"] == str(tmp_path / "pairs.csv")  # the test split only
    assert main(["cache", "--model", str(model_dir), "--catalog", str(catalog_csv), "--out", str(cache), "--quiet"]) == 0
    assert main(["serve", "--model", str(model_dir), "--backend", "onnx", "--quiet"]) == 2
    assert "needs an ONNX export" in capsys.readouterr().err
    served = ["--model", str(out), "--cache", str(cache), "--backend", "onnx", "--query-cache", "8"]
    with serve_process(served, tmp_path / "server.log") as (http, _):
        body = {"query": "garden hose", "product_ids": ["p0", "p1", "p2"]}
        for _ in range(3):
            r = http.post("/score", json=body)
            assert r.status_code == 200, r.text
        cat = pd.read_csv(catalog_csv).set_index("product_id")
        expected = DefectClassifier.load(model_dir).predict_proba(["garden hose"] * 3, cat.loc[body["product_ids"], "title"].tolist())
        np.testing.assert_allclose([x["defect_probability"] for x in r.json()["results"]], expected, atol=1e-4, rtol=0)
        health = http.get("/healthz").json()
        assert health["backend"] == "onnx"
        assert health["query_cache"] == {"capacity": 8, "size": 1, "hits": 2, "misses": 1, "hit_rate": pytest.approx(2 / 3)}


def test_pretrained_layers_export_within_1e4(contextual_model_dir, tmp_path):
    """The default model's family: MiniLM layers under both towers ([CLS]/[SEP] added inside the
    graph, the sentence vector appended), matching; one layer each to stay fast."""
    spec = export_onnx(contextual_model_dir, tmp_path / "export")
    clf = DefectClassifier.load(contextual_model_dir)
    assert spec["vector_dim"] == clf.model_config_.d_model + clf.model_config_.backbone["hidden_size"]
    scorer = OnnxScorer.load(tmp_path / "export")
    for query in ["cordless drill", "garden hose with a long query", "usb"]:
        np.testing.assert_allclose(scorer.score_titles(query, TITLES[:12]), clf.predict_proba([query] * 12, TITLES[:12]), atol=1e-4, rtol=0)


def test_an_export_says_when_its_source_threshold_moved(fitted, tmp_path):
    """threshold run on the model after export: serving the export would silently flag differently
    from predict (found by a new user), so loading it says so in one line."""
    import json
    import warnings

    from defectnas.serving.onnx_backend import stale_threshold_note

    fitted.save(tmp_path / "model")
    spec = export_onnx(tmp_path / "model", tmp_path / "export")
    assert stale_threshold_note(spec) == ""
    config = json.loads((tmp_path / "model" / "config.json").read_text())
    config["threshold"] = 0.05
    (tmp_path / "model" / "config.json").write_text(json.dumps(config))
    note = stale_threshold_note(spec)
    assert "0.05" in note and "re-export" in note and "\n" not in note
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        scorer = OnnxScorer.load(tmp_path / "export")
    assert scorer.threshold == spec["threshold"] and any("re-export" in str(w.message) for w in caught)
