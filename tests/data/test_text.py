import pandas as pd
import pytest

from defectnas.data import normalize_series, normalize_text, text_pairs
from defectnas.errors import DataError


def test_normalize_text_folds_width_case_and_whitespace():
    assert normalize_text("  ＤＲＩＬＬ\u00a0Bits\t\n10pc  ") == "drill bits 10pc"
    assert normalize_text("ﬁne  Café") == "fine café"  # ligature folded, accents kept
    assert normalize_text("") == ""


def test_normalize_series_matches_scalar_and_keeps_missing():
    values = pd.Series(["A  B", "\u3000x\u2028y ", None, float("nan"), "Ｑ"], index=[5, 6, 7, 8, 9])
    out = normalize_series(values)
    assert list(out.index) == [5, 6, 7, 8, 9]
    assert out.tolist()[:2] == [normalize_text("A  B"), normalize_text("\u3000x\u2028y ")] == ["a b", "x y"]
    assert out.isna().tolist() == [False, False, True, True, False]
    assert out.iloc[4] == "q"


def test_text_pairs_takes_a_table_or_two_lists_and_normalises_both():
    table = pd.DataFrame({"query": ["Drill  BIT"], "title": ["ｄｒｉｌｌ Bit Set"], "label": [0]})
    assert text_pairs(table) == (["drill bit"], ["drill bit set"])
    assert text_pairs(["Drill  BIT"], ["ｄｒｉｌｌ Bit Set"]) == (["drill bit"], ["drill bit set"])


def test_text_pairs_names_what_is_wrong():
    with pytest.raises(DataError, match="missing: title"):
        text_pairs(pd.DataFrame({"query": ["a"]}))
    with pytest.raises(DataError, match="2 queries but 1 title"):
        text_pairs(["a", "b"], ["x"])
    with pytest.raises(DataError, match="titles missing"):
        text_pairs(["a"])
    with pytest.raises(DataError, match="titles is a single string"):  # a string is a sequence of characters: not five pairs
        text_pairs(["d", "r", "i", "l", "l"], "bits!")

