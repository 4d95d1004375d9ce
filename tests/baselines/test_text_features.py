"""The hand-made pair features: each one answers its question, and they round-trip through disk."""

from __future__ import annotations

import numpy as np
import pytest

from defectnas.baselines.text_features import FEATURES, PairFeatures

TITLES = ["dewalt 20v max cordless drill", "iphone 12 case clear", "behr 1 gal. white paint", "12 in. steel shelf bracket"]


@pytest.fixture(scope="module")
def features() -> PairFeatures:
    return PairFeatures().fit(TITLES * 2)


def _row(features: PairFeatures, query: str, title: str) -> dict[str, float]:
    return dict(zip(FEATURES, features.transform([query], [title])[0]))


def test_shape_and_exact_match(features):
    X = features.transform(["cordless drill", "paint"], TITLES[:2])
    assert X.shape == (2, len(FEATURES)) and X.dtype == np.float32
    r = _row(features, "cordless drill", "dewalt 20v max cordless drill")
    assert r["q_coverage"] == 1.0 and r["last_word_in_title"] == 1.0 and r["max_idf_missing"] == 0.0
    assert r["bm25"] > 0 and 0 < r["tfidf_cosine"] <= 1.0


def test_plurals_numbers_units_and_accessories(features):
    assert _row(features, "cordless drills", "dewalt cordless drill")["stem_coverage"] == 1.0
    conflict = _row(features, "10 in. shelf bracket", "12 in. steel shelf bracket")
    assert conflict["quantity_conflict"] == 1.0 and conflict["numbers_missing"] == 1.0
    same = _row(features, "12 in shelf bracket", "12 in. steel shelf bracket")
    assert same["quantity_conflict"] == 0.0 and same["shared_quantities"] == 1.0
    acc = _row(features, "iphone 12", "iphone 12 case clear")
    assert acc["accessory_not_in_query"] == 1.0
    assert _row(features, "iphone 12 case", "iphone 12 case clear")["accessory_not_in_query"] == 0.0


def test_unseen_words_get_the_highest_idf(features):
    r = _row(features, "zebra drill", "dewalt 20v max cordless drill")
    assert r["max_idf_missing"] == pytest.approx(features.max_idf_)


def test_save_load_same_features(features, tmp_path):
    features.save(tmp_path)
    assert {p.name for p in tmp_path.iterdir()} == {"features.json", "features.safetensors"}
    again = PairFeatures.load(tmp_path)
    q, t = ["white paint", "iphone case"], TITLES[2:4]
    np.testing.assert_array_equal(again.transform(q, t), features.transform(q, t))
