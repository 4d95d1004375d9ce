"""`defectnas quickstart`: where its data comes from (--data, $DEFECTNAS_DATA, the embedded ESCI
sample), the floors it reports, and end to end on the embedded sample and on a slice of the real
Home Depot sample (slow: trains 3 tiny models each)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score

from defectnas import DefectClassifier
from defectnas.cli import main
from defectnas.datasets import esci_sample_path
from defectnas.quickstart import DATA_ENV, FLAG_ALL, flag_every_pair, resolve_data

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# ------------------------------------------------------------- where the data comes from
def test_data_flag_wins_over_env_and_sample(monkeypatch):
    monkeypatch.setenv(DATA_ENV, "from_env.csv")
    said = []
    assert resolve_data("given.csv", echo=said.append) == "given.csv"
    assert said == []


def test_env_wins_over_sample(monkeypatch):
    monkeypatch.setenv(DATA_ENV, "from_env.csv")
    said = []
    assert resolve_data(None, echo=said.append) == "from_env.csv"
    assert said == []


@pytest.mark.parametrize("env", [None, ""])
def test_no_data_falls_back_to_the_embedded_sample_and_says_so_in_one_line(monkeypatch, env):
    if env is None:
        monkeypatch.delenv(DATA_ENV, raising=False)
    else:
        monkeypatch.setenv(DATA_ENV, env)
    said = []
    path = resolve_data(None, echo=said.append)
    assert Path(path) == esci_sample_path() and Path(path).is_file()
    assert len(said) == 1 and "\n" not in said[0]
    assert "embedded ESCI sample" in said[0] and "--data PATH" in said[0] and f"{DATA_ENV}=PATH" in said[0]
    assert resolve_data(None, echo=None) == path  # echo=None: the same answer, silently


def test_flag_every_pair_row():
    labels = np.array([1, 0, 0, 0, 1, 0, 0, 0, 0, 0])  # r = 0.2
    row = flag_every_pair(labels)
    assert row["model"] == FLAG_ALL
    assert row["precision"] == pytest.approx(0.2) and row["recall"] == 1.0
    assert row["f1"] == pytest.approx(2 * 0.2 / 1.2)  # 2r/(1+r)
    assert row["average_precision"] == pytest.approx(average_precision_score(labels, np.ones(len(labels))))


def test_openmp_threads_wait_passively_unless_torch_is_loaded_or_the_user_chose(monkeypatch):
    import sys

    from defectnas.timing import yield_idle_cpu_threads

    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    assert yield_idle_cpu_threads() is False  # torch is already loaded here: too late to matter
    monkeypatch.delitem(sys.modules, "torch")
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    assert yield_idle_cpu_threads() is False and os.environ["OMP_WAIT_POLICY"] == "ACTIVE"
    monkeypatch.delenv("OMP_WAIT_POLICY")
    assert yield_idle_cpu_threads() is True and os.environ["OMP_WAIT_POLICY"] == "PASSIVE"


# ------------------------------------------------------------------------ end to end
@pytest.mark.slow
def test_bare_quickstart_runs_on_the_embedded_sample(tmp_path, tiny_config_path, capsys, monkeypatch):
    monkeypatch.delenv(DATA_ENV, raising=False)
    out = tmp_path / "qs"
    code = main(["quickstart", "--out", str(out), "--config", str(tiny_config_path), "--epochs", "1"])
    stdout, stderr = capsys.readouterr()
    assert code == 0, stderr
    notes = [line for line in stderr.splitlines() if "embedded ESCI sample" in line]
    assert notes and "--data PATH" in notes[0] and DATA_ENV in notes[0]
    assert "4485 pairs, 100 queries" in stderr

    rows = json.loads((out / "results.json").read_text())
    assert [r["model"] for r in rows][:2] == [FLAG_ALL, "tfidf-logreg (floor)"]
    assert {"dl-gs", "dl-jl", "transfer"} <= {r["model"] for r in rows}
    flag_all = rows[0]
    r = flag_all["precision"]
    assert 0.05 < r < 0.35 and flag_all["recall"] == 1.0
    assert flag_all["f1"] == pytest.approx(2 * r / (1 + r)) and flag_all["average_precision"] == pytest.approx(r)
    for row in rows:
        assert 0.0 <= row["average_precision"] <= 1.0 and 0.0 <= row["f1"] <= 1.0
    assert "average_precision" in pd.read_csv(out / "results.csv").columns
    assert "flagging every pair F1" in stdout and "TF-IDF floor F1" in stdout

    # the saved model knows its split: evaluate --split test scores quickstart's own test queries
    from defectnas.datasets import esci_sample_path

    best = max((r for r in rows if r["model"] in {"dl-gs", "dl-jl", "transfer"}), key=lambda r: r["valid_ap"])  # chosen on validation
    assert main(["evaluate", "--model", str(out / "model"), "--data", str(esci_sample_path()), "--split", "test",
                 "--json", str(tmp_path / "eval.json"), "--quiet"]) == 0
    assert json.loads((tmp_path / "eval.json").read_text())["average_precision"] == pytest.approx(best["average_precision"], abs=1e-6)


@pytest.mark.slow
def test_quickstart_end_to_end(tmp_path, homedepot_sample, tiny_config_path, capsys, monkeypatch):
    monkeypatch.setenv(DATA_ENV, str(tmp_path / "not_this.csv"))  # --data wins over $DEFECTNAS_DATA
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
        assert 0.0 <= r["average_precision"] <= 1.0
        assert r["params"] > 0 or r["model"] == FLAG_ALL
    table = pd.read_csv(out / "results.csv")
    assert table["model"].tolist() == models
    assert {"model", "precision", "recall", "f1", "average_precision", "params"} <= set(table.columns)
    md = (out / "results.md").read_text()
    assert md.startswith("| model") and all(m in md for m in models)
    assert all(m in stdout for m in models) and "best by validation AP:" in stdout

    clf = DefectClassifier.load(out / "model")
    assert clf.model_config_.d_model == 16
    best = max((r for r in rows if r["model"] in ("dl-gs", "dl-jl", "transfer")), key=lambda r: r["valid_ap"])
    assert clf.train_config_.variant == best["model"]
