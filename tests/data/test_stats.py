import pandas as pd
import pytest

from defectnas.data import describe, format_description


def test_describe_numbers(pairs: pd.DataFrame):
    d = describe(pairs)
    assert (d["rows"], d["queries"], d["products"], d["defects"]) == (12, 6, 11, 3)
    assert d["defect_rate"] == pytest.approx(0.25)
    assert d["query_words"] == {"p50": 1.0, "p90": 1.0, "p95": 1.0, "p99": 1.0, "max": 1.0}
    # title lengths: 3 2 1 4 1 2 1 1 2 1 3 2 words
    assert d["title_words"]["p50"] == 2.0 and d["title_words"]["max"] == 4.0
    assert d["title_words"]["p90"] == pytest.approx(3.0)
    assert "splits" not in d and "title_pieces" not in d  # word pieces need a tokenizer


def test_format_description_is_an_aligned_table(pairs: pd.DataFrame):
    d = describe(pairs.assign(split=["train"] * 10 + ["test"] * 2))
    assert d["splits"] == {"test": 2, "train": 10}
    text = format_description(d)
    lines = text.splitlines()
    assert lines[0].split() == ["rows", "12"] and "defect rate" in text and "25.0%" in text
    assert lines[-3].split() == ["lengths", "p50", "p90", "p95", "p99", "max"]
    assert lines[-1].split()[:2] == ["title", "words"] and lines[-1].split()[-1] == "4"
    assert len({len(line) for line in lines[:5]}) == 1  # the counts are right-aligned


def test_describe_without_labels(pairs: pd.DataFrame):
    d = describe(pairs.drop(columns=["label", "product_id"]))
    assert d["defect_rate"] is None and d["products"] == 11
    assert "n/a" in format_description(d)


class CountingTokenizer:
    """Word pieces: every character (so a test knows each text's count)."""

    def unknown_counts(self, texts):
        import numpy as np

        return np.array([len(t) for t in texts]), np.zeros(len(texts), dtype=int)


def test_word_piece_lengths_and_the_share_each_cap_cuts():
    """`data` printed whitespace words under a heading "tokens", which the caps do not count (helper, session 24)."""
    df = pd.DataFrame({"query": ["ab", "abcd", "ab", "abcdef"], "title": ["x" * 5, "y" * 40, "z" * 10, "x" * 5], "label": [0, 1, 0, 0]})
    d = describe(df, tokenizer=CountingTokenizer(), caps=(3, 32))
    assert d["query_pieces"]["max"] == 6.0 and d["query_pieces"]["p50"] == 3.0  # per row: 2, 4, 2, 6
    assert d["query_pieces"]["cap"] == 3 and d["query_pieces"]["over_cap"] == pytest.approx(0.5)
    assert d["title_pieces"]["over_cap"] == pytest.approx(0.25) and d["title_pieces"]["max"] == 40.0
    text = format_description(d)
    assert "query word pieces" in text and "50.0% over the cap of 3" in text and "25.0% over the cap of 32" in text


def test_data_prints_word_pieces_of_the_shared_sample_under_the_default_caps(shared_data, capsys):
    """The README's figures: Home Depot titles p50 17 word pieces, 4.2% over the cap of 32."""
    from defectnas.cli import main

    path = shared_data / "homedepot_sample.parquet"
    assert main(["data", str(path), "--quiet"]) == 0
    rows = {line[:18].strip(): line[18:].split() for line in capsys.readouterr().out.splitlines()}
    assert rows["title word pieces"][:1] == ["17"] and rows["title word pieces"][-6:] == ["4.2%", "over", "the", "cap", "of", "32"]
    assert rows["query word pieces"][-1] == "12" and rows["query words"][0] == "3"
