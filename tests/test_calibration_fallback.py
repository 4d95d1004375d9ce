"""A sigmoid with a non-positive slope falls back to isotonic regression, and says so
consistently: the report's ``selection`` names the sigmoid it chose first, then why isotonic
replaced it (the line ``train`` prints leads with the method that was used)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from defectnas.calibration import fit_calibrator

README = Path(__file__).resolve().parents[1] / "README.md"


def _backwards_scores(n: int = 300, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Labels and logits that rank the defects below chance (a weak model after one epoch)."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.1).astype(np.int64)
    return y, rng.normal(size=n) - 1.5 * y


@pytest.mark.parametrize("method", ["auto", "sigmoid"])
def test_fallback_to_isotonic_is_said_in_the_selection(method):
    y, z = _backwards_scores()
    cal = fit_calibrator(y, z, np.arange(len(y)), method=method)
    assert cal.method == "isotonic"
    selection = cal.report["selection"]
    assert selection.index("sigmoid") < selection.index("then isotonic instead") and "not positive" in selection
    assert "note" not in cal.report  # said once, in the selection


def test_readme_calibration_section_documents_the_fallback():
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## Calibration and thresholds"):text.index("**Operating points.**")]
    assert re.search(r"slope `a` is not positive", section) and "isotonic regression is fitted instead" in " ".join(section.split())
