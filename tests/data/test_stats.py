import pandas as pd
import pytest

from defectnas.data import describe, format_description


def test_describe_numbers(pairs: pd.DataFrame):
    d = describe(pairs)
    assert (d["rows"], d["queries"], d["products"], d["defects"]) == (12, 6, 11, 3)
    assert d["defect_rate"] == pytest.approx(0.25)
    assert d["query_tokens"] == {"p50": 1.0, "p90": 1.0, "p95": 1.0, "p99": 1.0, "max": 1.0}
    # title lengths: 3 2 1 4 1 2 1 1 2 1 3 2 tokens
    assert d["title_tokens"]["p50"] == 2.0 and d["title_tokens"]["max"] == 4.0
    assert d["title_tokens"]["p90"] == pytest.approx(3.0)
    assert "splits" not in d


def test_format_description_is_an_aligned_table(pairs: pd.DataFrame):
    d = describe(pairs.assign(split=["train"] * 10 + ["test"] * 2))
    assert d["splits"] == {"test": 2, "train": 10}
    text = format_description(d)
    lines = text.splitlines()
    assert lines[0].split() == ["rows", "12"] and "defect rate" in text and "25.0%" in text
    assert lines[-3].split() == ["tokens", "p50", "p90", "p95", "p99", "max"]
    assert lines[-1].split()[0] == "title" and lines[-1].split()[-1] == "4"
    assert len({len(line) for line in lines[:5]}) == 1  # the counts are right-aligned


def test_describe_without_labels(pairs: pd.DataFrame):
    d = describe(pairs.drop(columns=["label", "product_id"]))
    assert d["defect_rate"] is None and d["products"] == 11
    assert "n/a" in format_description(d)
