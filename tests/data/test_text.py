import pandas as pd

from defectnas.data import normalize_series, normalize_text


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
