"""Operating points: target precision/recall thresholds, per-group thresholds, the `threshold` command."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pandas as pd
import pytest

from defectnas import DefectClassifier
from defectnas.cli import main
from defectnas.thresholds import TargetUnreachable, apply_group_thresholds, choose_operating_point, target_threshold


def _noisy(seed: int = 0, n: int = 2000):
    rng = np.random.default_rng(seed)
    labels = (rng.random(n) < 0.3).astype(int)
    probs = 1 / (1 + np.exp(-(2.5 * labels + rng.normal(0, 1, n) - 1.5)))
    return labels, probs


def _at(labels, probs, threshold):
    flagged = probs >= threshold
    tp = int((flagged & (labels == 1)).sum())
    return tp / flagged.sum(), tp / labels.sum()


@pytest.mark.parametrize("target", [0.6, 0.8, 0.9])
def test_target_precision_is_reached_with_the_most_recall(target):
    labels, probs = _noisy()
    point = target_threshold(labels, probs, "precision", target)
    precision, recall = _at(labels, probs, point["threshold"])
    assert precision >= target and (precision, recall) == pytest.approx((point["precision"], point["recall"]))
    # no other threshold that keeps the target finds more defects
    for t in np.unique(probs):
        p, r = _at(labels, probs, t)
        assert not (p >= target and r > recall + 1e-12)


@pytest.mark.parametrize("target", [0.5, 0.8, 0.95])
def test_target_recall_is_reached_with_the_most_precision(target):
    labels, probs = _noisy(1)
    point = target_threshold(labels, probs, "recall", target)
    precision, recall = _at(labels, probs, point["threshold"])
    assert recall >= target and precision == pytest.approx(point["precision"])
    for t in np.unique(probs)[::7]:
        p, r = _at(labels, probs, t)
        assert not (r >= target and p > precision + 1e-12)


def test_unreachable_target_names_the_best_achievable_value():
    labels = np.array([0, 1, 0, 1, 0, 0])
    probs = np.array([0.9, 0.8, 0.7, 0.6, 0.2, 0.1])  # best precision 0.5 (at 0.8 and at 0.6)
    with pytest.raises(TargetUnreachable, match=r"best achievable precision with at least 1 flagged pairs is 0\.5000"):
        target_threshold(labels, probs, "precision", 0.9, min_flagged=1)
    with pytest.raises(TargetUnreachable, match="flags only 6 pairs, fewer than --min-flagged 20"):
        target_threshold(labels, probs, "precision", 0.9)


def test_a_target_precision_must_be_measured_on_enough_flagged_pairs():
    """Precision 1.0 on the single top pair is not an operating point (found by a new user: a 0.99
    target saved a threshold that flagged 1 of 224 defects)."""
    rng = np.random.default_rng(3)
    labels = (rng.random(2000) < 0.25).astype(int)
    labels, probs = np.r_[labels, 1], np.r_[rng.random(2000) * 0.9, 1.0]  # one defect on top of scores without signal
    top = target_threshold(labels, probs, "precision", 0.99, min_flagged=1)
    assert top["flagged"] == 1 and top["precision"] == 1.0 and top["precision_low"] < 0.25  # Wilson: [0.21, 1]
    with pytest.raises(TargetUnreachable, match=r"reached only with \d+ flagged pairs, fewer than --min-flagged 20"):
        target_threshold(labels, probs, "precision", 0.99)
    point = target_threshold(labels, probs, "precision", 0.2)
    assert point["flagged"] >= 20 and point["precision_low"] <= point["precision"] <= point["precision_high"]
    with pytest.raises(TargetUnreachable, match="no defects"):
        target_threshold(np.zeros(3), np.array([0.1, 0.2, 0.3]), "recall", 0.5)


def test_per_group_thresholds_with_the_small_group_fallback():
    labels, probs = _noisy(2, 3000)
    groups = pd.Series(np.where(np.arange(3000) < 1500, "us", np.where(np.arange(3000) < 2950, "de", "fr")))
    probs = np.where(groups == "de", probs ** 2, probs)  # another score scale in one locale
    record, per_group = choose_operating_point(labels, probs, "precision", 0.8, "valid.csv", groups, "locale", min_group=200, min_group_defects=20)
    assert set(per_group["thresholds"]) == {"us", "de"} and set(per_group["fallback"]) == {"fr"}  # fr: 50 pairs
    assert per_group["fallback"]["fr"]["reason"].startswith("50 pairs, fewer than 200")  # which limit it missed
    # what the rows' own thresholds reach together on these pairs (the record's figures are the global threshold's)
    flags = probs >= apply_group_thresholds(groups, per_group, record["threshold"])
    together = per_group["together"]
    assert together["flagged"] == flags.sum() and together["precision"] == pytest.approx(labels[flags].mean())
    assert together["recall"] == pytest.approx(flags[labels == 1].mean()) and together["precision"] != pytest.approx(record["precision"])
    assert together["precision_low"] < together["precision"] < together["precision_high"]
    for g in ("us", "de"):
        mask = (groups == g).to_numpy()
        assert _at(labels[mask], probs[mask], per_group["thresholds"][g]["threshold"])[0] >= 0.8
    rows = apply_group_thresholds(pd.Series(["us", "de", "fr", "jp"]), per_group, record["threshold"])
    assert rows.tolist() == [per_group["thresholds"]["us"]["threshold"], per_group["thresholds"]["de"]["threshold"],
                             record["threshold"], record["threshold"]]  # unseen "jp" too


# ----------------------------------------------------------------- the command
@pytest.fixture(scope="module")
def base_model(fitted, tmp_path_factory):
    return fitted.save(tmp_path_factory.mktemp("base"))


@pytest.fixture
def model_dir(base_model, tmp_path):
    return shutil.copytree(base_model, tmp_path / "model")


@pytest.fixture(scope="module")
def noisy_csv(synthetic_pairs, tmp_path_factory):
    """The synthetic pairs with 5% of labels flipped (so precision targets bite) and a locale column."""
    rng = np.random.default_rng(0)
    df = synthetic_pairs.copy()
    flip = rng.random(len(df)) < 0.05
    df.loc[flip, "label"] = 1 - df.loc[flip, "label"]
    codes = df["query"].map({q: i for i, q in enumerate(sorted(df["query"].unique()))})
    df["locale"] = np.where(codes < 50, "us", np.where(codes < 95, "de", "fr"))  # 400, 360 and 40 pairs
    path = tmp_path_factory.mktemp("data") / "noisy.csv"
    df.to_csv(path, index=False)
    return path


def run(argv, capsys):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_threshold_command_saves_an_operating_point_that_evaluate_reproduces(model_dir, noisy_csv, capsys):
    code, out, err = run(["threshold", "--model", str(model_dir), "--data", str(noisy_csv), "--target-precision", "0.9", "--quiet"], capsys)
    assert code == 0, err
    point = json.loads(out)["operating_point"]
    config = json.loads((model_dir / "config.json").read_text())
    assert config["threshold"] == point["threshold"] and config["operating_point"]["target"] == 0.9
    assert config["operating_point"]["rule"] == "target-precision" and config["operating_point"]["data"] == str(noisy_csv.resolve())
    assert config["threshold_rule"] == "precision >= 0.9 on noisy.csv" and "previous_threshold" in config["operating_point"]
    code, out, err = run(["evaluate", "--model", str(model_dir), "--data", str(noisy_csv)], capsys)
    metrics = json.loads(out)
    assert code == 0 and metrics["precision"] >= 0.9 and metrics["recall"] == pytest.approx(point["recall"])
    assert metrics["precision_low"] <= metrics["precision"] <= metrics["precision_high"]
    assert "precision >= 0.9 on noisy.csv" in err and "95% Wilson" in err
    assert DefectClassifier.load(model_dir).threshold_ == point["threshold"]


def test_per_group_thresholds_are_applied_by_predict_and_evaluate(model_dir, noisy_csv, tmp_path, capsys):
    code, out, err = run(["threshold", "--model", str(model_dir), "--data", str(noisy_csv), "--target-recall", "0.9", "--by", "locale",
                          "--min-group", "100", "--min-group-defects", "10", "--quiet"], capsys)
    assert code == 0, err
    groups = json.loads((model_dir / "config.json").read_text())["group_thresholds"]
    assert groups["column"] == "locale" and set(groups["thresholds"]) == {"us", "de"} and set(groups["fallback"]) == {"fr"}
    clf = DefectClassifier.load(model_dir)
    table = pd.read_csv(noisy_csv)
    rows = apply_group_thresholds(table["locale"], groups, clf.threshold_)
    probs = clf.predict_proba(table)
    target = tmp_path / "scored.csv"
    assert run(["predict", "--model", str(model_dir), "--data", str(noisy_csv), "--out", str(target), "--quiet"], capsys)[0] == 0
    assert pd.read_csv(target)["is_defect"].tolist() == (probs >= rows).tolist()
    code, out, err = run(["evaluate", "--model", str(model_dir), "--data", str(noisy_csv)], capsys)
    assert code == 0 and json.loads(out)["threshold_by"] == "locale"
    shown = re.search(r"there: precision ([\d.]+), recall ([\d.]+)\); here: precision ([\d.]+) \[[^]]*\], recall ([\d.]+)", err).groups()
    there, here = shown[:2], shown[2:]
    assert there == here, err  # the same pairs: "there" is what the per-group thresholds reached, not the global one's figures
    assert np.array_equal(clf.predict(table), (probs >= rows).astype(int))
    # without the column: the global threshold, said once
    plain = tmp_path / "plain.csv"
    table.drop(columns="locale").to_csv(plain, index=False)
    code, out, err = run(["evaluate", "--model", str(model_dir), "--data", str(plain)], capsys)
    assert code == 0 and "threshold_by" not in json.loads(out) and err.count("no 'locale' column") == 1


def test_unreachable_target_and_bad_input_are_one_line_errors(model_dir, noisy_csv, tmp_path, capsys):
    before = (model_dir / "config.json").read_text()
    inverted = tmp_path / "inverted.csv"
    df = pd.read_csv(noisy_csv)
    df.assign(label=1 - df["label"]).to_csv(inverted, index=False)
    for argv, fragment in [(["--data", str(inverted), "--target-precision", "0.95"], "best achievable precision with at least"),
                           (["--data", str(noisy_csv), "--target-recall", "0.5", "--by", "region"], "no column 'region'")]:
        code, _, err = run(["threshold", "--model", str(model_dir), *argv], capsys)
        assert code == 2 and len(err.strip().splitlines()) == 1 and err.startswith("error: ") and fragment in err, err
    for flag, value in [("--target-recall", "1.5"), ("--target-precision", "0"), ("--target-precision", "high")]:
        # refused as the command line is read, before any data: the table here does not even exist
        with pytest.raises(SystemExit) as e:
            main(["threshold", "--model", str(model_dir), "--data", str(tmp_path / "none.csv"), flag, value])
        code, err = e.value.code, capsys.readouterr().err
        assert code == 2 and len(err.strip().splitlines()) == 1 and f"argument {flag}: must be" in err and "none.csv" not in err, err
    assert (model_dir / "config.json").read_text() == before  # nothing saved
    with pytest.raises(SystemExit) as e:  # neither target given: argparse's usage error
        main(["threshold", "--model", str(model_dir), "--data", str(noisy_csv)])
    assert e.value.code == 2


def test_evaluate_writes_a_reliability_diagram(base_model, synthetic_split, tmp_path, capsys):
    data = tmp_path / "test.csv"
    synthetic_split["test"].to_csv(data, index=False)
    code, _, err = run(["evaluate", "--model", str(base_model), "--data", str(data), "--json", str(tmp_path / "eval.json"), "--quiet"], capsys)
    assert code == 0, err
    assert (tmp_path / "eval.reliability.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    code, _, _ = run(["evaluate", "--model", str(base_model), "--data", str(data), "--plot", str(tmp_path / "r.png"), "--quiet"], capsys)
    assert code == 0 and (tmp_path / "r.png").stat().st_size > 0


def test_a_new_threshold_keeps_the_product_cache_valid(model_dir, noisy_csv, tmp_path, capsys):
    from defectnas.serving.cache import build_cache
    from defectnas.serving.scorer import Scorer

    catalog = pd.DataFrame({"product_id": ["1", "2"], "title": ["acme drill", "bolt paint"]})
    build_cache(model_dir, catalog, tmp_path / "cache", quiet=True, dtype="float32")  # exact: compared to predict_proba at 1e-6
    assert run(["threshold", "--model", str(model_dir), "--data", str(noisy_csv), "--target-recall", "0.8", "--quiet"], capsys)[0] == 0
    scorer = Scorer.load(model_dir, tmp_path / "cache")
    assert scorer.threshold == json.loads((model_dir / "config.json").read_text())["threshold"]
    np.testing.assert_allclose(scorer.score_ids("cordless drill", ["1", "2"]),
                               scorer.clf.predict_proba(["cordless drill"] * 2, ["acme drill", "bolt paint"]), atol=1e-6, rtol=0)
