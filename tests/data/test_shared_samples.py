"""The real shared samples load with the defect rates their data cards state."""

from pathlib import Path

import pytest

from defectnas.data import load_pairs


@pytest.mark.parametrize("name, rows, rate", [("homedepot_sample.parquet", 51877, 0.070), ("crowdflower_sample.parquet", 6952, 0.078)])
def test_shared_sample_defect_rate(shared_data: Path, name: str, rows: int, rate: float):
    out = load_pairs(shared_data / name)
    assert len(out) == rows
    assert out["label"].mean() == pytest.approx(rate, abs=0.0015)
    assert out["query"].str.len().min() > 0 and out["title"].str.len().min() > 0
