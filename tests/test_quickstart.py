"""`defectnas quickstart` end to end on a slice of the real Home Depot sample (slow: trains 3 models)."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from defectnas import DefectClassifier
from defectnas.cli import main

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_quickstart_end_to_end(tmp_path, homedepot_sample, tiny_config_path, capsys, monkeypatch):
    monkeypatch.delenv("DEFECTNAS_DATA", raising=False)
    full = pd.read_parquet(homedepot_sample)
    queries = sorted(full["search_term"].unique())[:300]
    subset = full[full["search_term"].isin(queries)]
    data = tmp_path / "homedepot_300.parquet"
    subset.to_parquet(data, index=False)
    out = tmp_path / "qs"

    code = main(["quickstart", "--data", str(data), "--out", str(out), "--config", str(tiny_config_path), "--quiet"])
    stdout, stderr = capsys.readouterr()
    assert code == 0, stderr

    for name in ("results.csv", "results.json", "results.md", "pr_curve.png"):
        assert (out / name).is_file(), name
    assert (out / "pr_curve.png").read_bytes()[:8] == PNG_MAGIC
    assert (out / "pr_curve.png").stat().st_size > 5000

    rows = json.loads((out / "results.json").read_text())
    models = [r["model"] for r in rows]
    assert {"dl-gs", "dl-jl", "transfer"} <= set(models) and any("tfidf" in m for m in models)
    for r in rows:
        assert 0.0 <= r["precision"] <= 1.0 and 0.0 <= r["recall"] <= 1.0 and 0.0 <= r["f1"] <= 1.0
        assert r["params"] > 0
    table = pd.read_csv(out / "results.csv")
    assert table["model"].tolist() == models and {"model", "precision", "recall", "f1", "params"} <= set(table.columns)
    md = (out / "results.md").read_text()
    assert md.startswith("| model") and all(m in md for m in models)
    assert all(m in stdout for m in models) and "best:" in stdout

    clf = DefectClassifier.load(out / "model")
    assert clf.model_config_.d_model == 16
    best = max((r for r in rows if r["model"] in ("dl-gs", "dl-jl", "transfer")), key=lambda r: r["f1"])
    assert clf.train_config_.variant == best["model"]
