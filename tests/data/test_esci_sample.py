"""The ESCI sample shipped inside the package: real rows, ESCI's own layout, its attribution beside it."""

from __future__ import annotations

import pandas as pd
import pytest

import defectnas.datasets as datasets
from defectnas.data import load_pairs
from defectnas.datasets import ESCI_COLUMNS, esci_sample_path, load_esci_sample

from .conftest import shared_data_dir


@pytest.fixture(scope="module")
def sample() -> pd.DataFrame:
    return load_esci_sample()


def test_sample_is_real_esci_in_its_own_layout(sample: pd.DataFrame):
    assert list(sample.columns) == ESCI_COLUMNS
    assert len(sample) == 4485
    assert set(sample["product_locale"]) == {"us"}
    assert sample["query_id"].nunique() == 100 and sample["query"].nunique() == 100
    assert (sample.groupby("query_id")["query"].nunique() == 1).all()  # one text per original ESCI query id
    assert sample["query_id"].min() >= 0
    assert sample["product_id"].str.fullmatch(r"[A-Z0-9]{10}").all()  # ASINs
    assert not sample.duplicated(["query_id", "product_id"]).any()
    assert set(sample["esci_label"]) == {"E", "S", "C", "I"}
    shares = sample["esci_label"].value_counts(normalize=True)
    assert shares["E"] > shares["S"] > shares["I"] > shares["C"] > 0.04  # E 50%, S 29%, I 16%, C 5% (data card)
    assert sample["product_title"].str.len().min() > 0 and sample["query"].str.len().min() > 0
    # a known row: ESCI query 100189 and one of its judged candidates
    row = sample[(sample["query_id"] == 100189) & (sample["product_id"] == "B01M3YCXD2")]
    assert row["query"].tolist() == ["table top bandsaw for metal"]


def test_load_pairs_reads_the_sample_as_esci(sample: pd.DataFrame):
    out = load_pairs(esci_sample_path())
    assert len(out) == len(sample)
    assert out["label"].tolist() == (sample["esci_label"] == "I").astype(int).tolist()
    assert out["label"].mean() == pytest.approx(0.157, abs=0.001)
    assert out["product_id"].tolist() == sample["product_id"].tolist()
    assert load_pairs(sample)["label"].sum() == 702  # the DataFrame reads the same way


def test_sample_ships_small_with_its_data_card_and_notice():
    path = esci_sample_path()
    assert path.stat().st_size <= 1_000_000  # keeps the wheel small
    card = (path.parent / "README-esci.md").read_text(encoding="utf-8")
    notice = (path.parent / "NOTICE").read_text(encoding="utf-8")
    assert "Apache-2.0" in card and "esci_label" in card
    assert "Apache License, Version 2.0" in notice and "arXiv:2206.06588" in notice and "esci_sample.parquet" in notice


def test_packaged_sample_is_the_shared_one():
    shared = shared_data_dir()
    if shared is None or not (shared / "esci_sample.parquet").is_file():
        pytest.skip("shared ESCI sample not found (set DEFECTNAS_SHARED)")
    assert esci_sample_path().read_bytes() == (shared / "esci_sample.parquet").read_bytes()


def test_missing_sample_is_a_one_line_error(monkeypatch, raises_data_error):
    monkeypatch.setattr(datasets, "ESCI_SAMPLE", "no_such_sample.parquet")
    raises_data_error(load_esci_sample, contains=("embedded ESCI sample is missing", "reinstall defectnas"))
