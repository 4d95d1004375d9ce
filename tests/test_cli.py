"""The command line, called in-process (plus one real subprocess): outputs, files and one-line errors."""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from defectnas import DefectClassifier
from defectnas.cli import main

CONTRACT_KEYS = {"precision", "recall", "f1", "threshold", "n", "defect_rate", "average_precision", "ece", "brier",
                 "precision_low", "precision_high", "recall_low", "recall_high"}


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code: int, err: str, *fragments: str) -> None:
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ") and "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


@pytest.fixture(scope="module")
def data_csv(tmp_path_factory, synthetic_pairs):
    path = tmp_path_factory.mktemp("data") / "pairs.csv"
    synthetic_pairs.to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def config_json(tiny_config_path):
    return tiny_config_path


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, data_csv, config_json):
    """A model trained once by `defectnas train` for the evaluate/predict tests."""
    out = tmp_path_factory.mktemp("model")
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        assert main(["train", "--data", str(data_csv), "--out", str(out), "--config", str(config_json), "--variant", "dl-gs",
                     "--epochs", "3", "--quiet"]) == 0
    return out


def test_train_prints_the_contract_json_and_writes_a_model(tmp_path, data_csv, tiny_config_file, capsys):
    out = tmp_path / "model"
    code, stdout, stderr = run(["train", "--data", str(data_csv), "--out", str(out), "--config", str(tiny_config_file),
                                "--embedding-init", "trained", "--epochs", "1", "--quiet"], capsys)
    assert code == 0, stderr
    assert stderr == ""  # --quiet
    metrics = json.loads(stdout)
    assert set(metrics) == CONTRACT_KEYS
    assert json.loads((out / "metrics.json").read_text()) == metrics
    assert all(0.0 <= metrics[k] <= 1.0 for k in CONTRACT_KEYS - {"n"})
    assert metrics["n"] == 160  # 20% of the 100 queries × 8 titles are held out as test
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in out.iterdir()}
    assert not (out / "checkpoint.safetensors").exists()  # removed without --keep-checkpoint
    config = json.loads((out / "config.json").read_text())
    assert config["model"]["d_model"] == 16 and len(config["model"]["title_layers"]) == 2  # from --config
    assert config["train"]["epochs"] == 1 and config["train"]["variant"] == "dl-gs"  # flag beats file; default variant
    assert len(config["history"]) == 1
    assert DefectClassifier.load(out).predict_proba(["white drill"], ["acme drill"]).shape == (1,)


def test_train_reports_progress_unless_quiet(tmp_path, data_csv, config_json, capsys):
    code, stdout, stderr = run(["train", "--data", str(data_csv), "--out", str(tmp_path), "--config", str(config_json),
                                "--variant", "dl-gs", "--epochs", "1"], capsys)
    assert code == 0
    assert "model saved to" in stderr and '"valid_f1"' in stderr
    assert set(json.loads(stdout)) == CONTRACT_KEYS


def test_evaluate_writes_the_contract_json(tmp_path, model_dir, data_csv, capsys):
    target = tmp_path / "eval.json"
    code, stdout, stderr = run(["evaluate", "--model", str(model_dir), "--data", str(data_csv), "--json", str(target), "--quiet"], capsys)
    assert code == 0, stderr
    printed, written = json.loads(stdout), json.loads(target.read_text())
    assert printed == written and set(written) == CONTRACT_KEYS
    assert written["n"] == 800 and written["defect_rate"] == pytest.approx(0.25)
    expected = DefectClassifier.load(model_dir).evaluate(pd.read_csv(data_csv))
    assert written == pytest.approx(expected)


def test_evaluate_says_when_the_model_is_at_chance_even_with_quiet(tmp_path, model_dir, data_csv, capsys):
    inverted = tmp_path / "inverted.csv"
    frame = pd.read_csv(data_csv)
    frame.assign(label=1 - frame["label"]).to_csv(inverted, index=False)
    code, stdout, stderr = run(["evaluate", "--model", str(model_dir), "--data", str(inverted), "--quiet"], capsys)
    assert code == 0 and json.loads(stdout)["average_precision"] <= 0.75
    assert stderr.count("no better than a random order") == 1 and stderr.startswith("warning: AP ")
    code, _, stderr = run(["evaluate", "--model", str(model_dir), "--data", str(data_csv), "--quiet"], capsys)
    assert code == 0 and "random order" not in stderr


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_predict_adds_probability_and_flag(tmp_path, model_dir, synthetic_pairs, suffix, capsys):
    data = tmp_path / "in.csv"
    synthetic_pairs.head(30)[["query", "title"]].to_csv(data, index=False)  # no labels needed
    target = tmp_path / f"scored{suffix}"
    code, _, stderr = run(["predict", "--model", str(model_dir), "--data", str(data), "--out", str(target), "--quiet"], capsys)
    assert code == 0, stderr
    scored = pd.read_csv(target) if suffix == ".csv" else pd.read_parquet(target)
    assert len(scored) == 30 and {"query", "title", "defect_probability", "is_defect"} <= set(scored.columns)
    clf = DefectClassifier.load(model_dir)
    expected = clf.predict_proba(synthetic_pairs.head(30)["query"].tolist(), synthetic_pairs.head(30)["title"].tolist())
    assert np.allclose(scored["defect_probability"], expected, atol=1e-6)
    assert scored["is_defect"].astype(bool).tolist() == (expected >= clf.threshold_).tolist()
    if suffix == ".parquet":
        assert scored["is_defect"].dtype == bool
        return
    again = tmp_path / "rescored.csv"  # a table scored before: its columns are replaced, and that is said (helper, session 24)
    scored.assign(defect_probability=0.5).to_csv(data, index=False)
    code, _, stderr = run(["predict", "--model", str(model_dir), "--data", str(data), "--out", str(again)], capsys)
    assert code == 0 and f"note: {data} already has defect_probability, is_defect: replaced by this model's" in stderr
    rescored = pd.read_csv(again)
    assert list(rescored.columns) == list(scored.columns) and np.allclose(rescored["defect_probability"], expected, atol=1e-6)


def test_data_prints_rows_and_defect_rate(data_csv, capsys):
    code, stdout, _ = run(["data", str(data_csv)], capsys)
    assert code == 0
    lines = {line.split("  ")[0].strip(): line.split()[-1] for line in stdout.splitlines() if line.strip()}
    assert lines["rows"] == "800" and lines["queries"] == "100" and lines["defects"] == "200"
    assert lines["defect rate"] == "25.0%"
    code, same, _ = run(["data", "--data", str(data_csv)], capsys)  # the --data every other command takes works too
    assert code == 0 and same == stdout
    code, _, err = run(["data"], capsys)
    assert code == 2 and "give the table" in err


def test_data_describes_a_table_predict_scores_as_unlabelled(tmp_path, data_csv, capsys):
    """A table of query and title only is what predict scores; data described nothing of it (helper, session 21)."""
    unlabelled = tmp_path / "log.csv"
    pd.read_csv(data_csv).drop(columns="label").to_csv(unlabelled, index=False)
    code, stdout, err = run(["data", str(unlabelled)], capsys)
    assert code == 0, err
    lines = {line.split("  ")[0].strip(): line.split()[-1] for line in stdout.splitlines() if line.strip()}
    assert lines["rows"] == "800" and lines["defects"] == "n/a" and "no label column recognised" in err
    assert run(["data", str(unlabelled), "--quiet"], capsys)[2] == ""
    code, _, err = run(["data", str(unlabelled), "--label-col", "grade"], capsys)  # a label column asked for: still refused
    assert code != 0 and "no label column recognised" not in err
    bad_label = tmp_path / "bad_label.csv"  # a labelled table with a broken label is refused for it, not described unlabelled
    pd.read_csv(data_csv).assign(label=lambda f: f["label"].astype(str).where(f.index != 3, "maybe")).to_csv(bad_label, index=False)
    code, _, err = run(["data", str(bad_label)], capsys)
    assert code != 0 and "maybe" in err and "unlabelled" not in err
    odd = tmp_path / "odd.csv"
    odd.write_text("a,b\nx,y\n")
    code, _, err = run(["data", str(odd)], capsys)
    assert code != 0 and "cannot recognise the table layout" in err  # the first reason, not the unlabelled retry's


@pytest.fixture
def bad_inputs(tmp_path):
    (tmp_path / "wrong_cols.csv").write_text("search,product,label\na,b,1\nc,d,0\n")
    (tmp_path / "bad.json").write_text('{"epochs": 2,}')
    (tmp_path / "unknown.json").write_text('{"d_model": 16, "n_layers": 3}')
    return tmp_path


@pytest.mark.parametrize("case,fragments", [
    ("missing file", ("nope.csv",)),
    ("unknown format", ("bogus", "auto")),
    ("missing columns", ("wrong_cols.csv", "query")),
    ("unknown config option", ("n_layers", "d_model")),
    ("bad config json", ("bad.json", "JSON")),
    ("bad option value", ("epochs",)),
])
def test_errors_exit_2_with_one_line(bad_inputs, data_csv, case, fragments, capsys):
    d = bad_inputs
    argv = {
        "missing file": ["train", "--data", str(d / "nope.csv"), "--out", str(d / "o")],
        "unknown format": ["data", str(data_csv), "--format", "bogus"],
        "missing columns": ["train", "--data", str(d / "wrong_cols.csv"), "--out", str(d / "o")],
        "unknown config option": ["train", "--data", str(data_csv), "--out", str(d / "o"), "--config", str(d / "unknown.json")],
        "bad config json": ["train", "--data", str(data_csv), "--out", str(d / "o"), "--config", str(d / "bad.json")],
        "bad option value": ["train", "--data", str(data_csv), "--out", str(d / "o"), "--epochs", "0"],
    }[case]
    code, stdout, stderr = run(argv + ["--quiet"], capsys)
    assert_one_line_error(code, stderr, *fragments)
    assert stdout == ""


def test_predict_to_an_unknown_extension_is_one_line(tmp_path, model_dir, data_csv, capsys):
    code, _, stderr = run(["predict", "--model", str(model_dir), "--data", str(data_csv), "--out", str(tmp_path / "x.xlsx"), "--quiet"], capsys)
    assert_one_line_error(code, stderr, ".xlsx")
    assert not (tmp_path / "x.xlsx").exists()
    # checked before anything is read: a missing data file is not what it complains about
    code, _, stderr = run(["predict", "--model", str(model_dir), "--data", str(tmp_path / "absent.csv"), "--out", str(tmp_path / "x.xlsx")], capsys)
    assert_one_line_error(code, stderr, ".xlsx")
    code, _, stderr = run(["distill-query", "--model", str(model_dir), "--data", str(tmp_path / "absent.csv"), "--out", str(model_dir)], capsys)
    assert_one_line_error(code, stderr, "the model's own directory")


def test_evaluate_of_a_missing_model_is_one_line(tmp_path, data_csv, capsys):
    code, _, stderr = run(["evaluate", "--model", str(tmp_path), "--data", str(data_csv)], capsys)
    assert_one_line_error(code, stderr, "not a model directory")


def test_a_real_process_exits_2_without_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "defectnas.cli", "data", str(tmp_path / "missing.csv")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "missing.csv" in lines[0]
    assert "Traceback" not in proc.stderr


def test_quickstart_reads_env_before_the_embedded_sample(monkeypatch, capsys, tmp_path):
    # $DEFECTNAS_DATA set to a missing file: a one-line error naming it, never a silent fallback
    monkeypatch.setenv("DEFECTNAS_DATA", str(tmp_path / "gone.csv"))
    code, _, stderr = run(["quickstart", "--out", str(tmp_path / "qs"), "--quiet"], capsys)
    assert_one_line_error(code, stderr, "gone.csv")
    # --data wins over $DEFECTNAS_DATA
    code, _, stderr = run(["quickstart", "--data", str(tmp_path / "other.csv"), "--out", str(tmp_path / "qs"), "--quiet"], capsys)
    assert_one_line_error(code, stderr, "other.csv")


def _resume_argv(data_csv, config_json, out):
    return ["train", "--data", str(data_csv), "--out", str(out), "--config", str(config_json), "--variant", "dl-gs",
            "--epochs", "2", "--keep-checkpoint", "--quiet"]


def test_resume_of_a_finished_run_does_not_retrain(tmp_path, data_csv, config_json, monkeypatch, capsys):
    from defectnas.training import trainer

    argv = _resume_argv(data_csv, config_json, tmp_path)
    code, first, _ = run(argv, capsys)
    assert code == 0 and (tmp_path / "checkpoint.safetensors").exists()
    monkeypatch.setattr(trainer, "weighted_bce", lambda *a, **k: pytest.fail("a finished run was trained again"))
    code, again, stderr = run(argv + ["--resume"], capsys)
    assert code == 0, stderr
    assert set(json.loads(again)) == CONTRACT_KEYS
    assert len(json.loads((tmp_path / "config.json").read_text())["history"]) == 2


def test_resume_of_a_finished_run_gives_the_same_metrics(tmp_path, data_csv, config_json, capsys):
    argv = _resume_argv(data_csv, config_json, tmp_path)
    code, first, _ = run(argv, capsys)
    probe = pd.read_csv(data_csv).head(200)
    before = DefectClassifier.load(tmp_path).predict_proba(probe)
    code, again, _ = run(argv + ["--resume"], capsys)
    assert code == 0
    assert np.array_equal(DefectClassifier.load(tmp_path).predict_proba(probe), before)
    assert json.loads(again) == json.loads(first)


@pytest.mark.parametrize("command", ["train", "evaluate", "predict", "quickstart", "data", "download"])
def test_every_command_has_help_quiet_and_seed(command, capsys):
    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    assert "--quiet" in text and "--seed" in text


def test_preset_then_config_then_flags(tmp_path, data_csv, tiny_config_file, capsys):
    """--preset sets options, --config overrides them, flags override both."""
    out = tmp_path / "preset"
    code, _, stderr = run(["train", "--data", str(data_csv), "--out", str(out), "--preset", "seed", "--config", str(tiny_config_file),
                           "--embedding-init", "trained", "--epochs", "1", "--quiet"], capsys)
    assert code == 0, stderr
    model = json.loads((out / "config.json").read_text())["model"]
    assert model["matching"] is False and model["backbone_layers"] == 0  # from the preset (the default is True / 6)
    assert len(model["title_layers"]) == 2 and len(model["query_layers"]) == 1  # --config beats the preset's 5 / 2


def test_train_records_its_splits_and_evaluate_threshold_use_or_warn(model_dir, data_csv, tmp_path, capsys):
    """A newcomer evaluating on the file they trained on gets a warning; --split keeps the model's
    own held-out queries (found by a new user: no way to get held-out data back)."""
    import shutil

    model_dir = Path(shutil.copytree(model_dir, tmp_path / "model"))  # threshold rewrites config.json
    splits = json.loads((model_dir / "splits.json").read_text())
    train, valid, test = set(splits["train"]), set(splits["valid"]), set(splits["test"])
    assert len(train) == 70 and len(valid) == 10 and len(test) == 20 and not (train & valid or train & test or valid & test)
    code, stdout, stderr = run(["evaluate", "--model", str(model_dir), "--data", str(data_csv)], capsys)
    assert code == 0 and "were in the model's training split" in stderr and json.loads(stdout)["n"] == 800
    code, stdout, stderr = run(["evaluate", "--model", str(model_dir), "--data", str(data_csv), "--split", "test"], capsys)
    assert code == 0 and "training split" not in stderr and json.loads(stdout)["n"] == 160
    code, stdout, stderr = run(["threshold", "--model", str(model_dir), "--data", str(data_csv), "--split", "valid",
                                "--target-recall", "0.5"], capsys)
    assert code == 0 and json.loads(stdout)["operating_point"]["n"] == 80


def test_threshold_refuses_data_that_was_mostly_training_pairs(tmp_path, model_dir, data_csv, synthetic_pairs, capsys):
    import shutil

    model = shutil.copytree(model_dir, tmp_path / "model")
    before = (model / "config.json").read_text()
    code, _, err = run(["threshold", "--model", str(model), "--data", str(data_csv), "--target-recall", "0.5"], capsys)
    assert_one_line_error(code, err, "560 of its 800 pairs (70%) were in the model's training split", "--split valid", "--allow-training-pairs")
    assert (model / "config.json").read_text() == before  # nothing saved
    code, out, _ = run(["threshold", "--model", str(model), "--data", str(data_csv), "--target-recall", "0.5", "--allow-training-pairs"], capsys)
    assert code == 0 and json.loads(out)["operating_point"]["n"] == 800
    # held-out queries and training queries half and half: not mostly training pairs, so chosen (with the usual warning)
    splits = json.loads((model / "splits.json").read_text())
    half = synthetic_pairs[synthetic_pairs["query"].isin(set(splits["test"]) | set(sorted(splits["train"])[:20]))]
    half_csv = tmp_path / "half.csv"
    half.to_csv(half_csv, index=False)
    code, _, err = run(["threshold", "--model", str(model), "--data", str(half_csv), "--target-recall", "0.5"], capsys)
    assert code == 0 and "were in the model's training split, so these numbers are optimistic" in err


def test_an_interrupted_train_says_how_to_resume_and_a_new_run_says_it_replaces_a_checkpoint(tmp_path, data_csv, config_json, monkeypatch,
                                                                                              capsys):
    def interrupted(self, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(DefectClassifier, "fit", interrupted)
    (tmp_path / "checkpoint.safetensors").write_bytes(b"an earlier run's")
    argv = [a for a in _resume_argv(data_csv, config_json, tmp_path) if a != "--quiet"]
    code, _, stderr = run(argv, capsys)
    assert code == 130
    assert "holds the checkpoint of an earlier run" in stderr and "add --resume to continue" in stderr
    assert "interrupted; what finished is checkpointed" in stderr and "rerun the same command with --resume" in stderr
    code, _, stderr = run(argv + ["--resume"], capsys)  # resuming: neither note
    assert code == 130 and "earlier run" not in stderr and "rerun" not in stderr


@pytest.mark.parametrize("command", ["evaluate", "predict"])
def test_a_command_given_an_onnx_export_says_what_it_is_and_what_takes_it(tmp_path, data_csv, capsys, command):
    (tmp_path / "export.json").write_text("{}")  # what `defectnas export` leaves beside its graphs
    argv = [command, "--model", str(tmp_path), "--data", str(data_csv)] + (["--out", str(tmp_path / "o.csv")] if command == "predict" else [])
    code, _, stderr = run(argv, capsys)
    assert_one_line_error(code, stderr, "an ONNX export")
    assert "serve --backend onnx" in stderr and "model directory it was exported from" in stderr


@pytest.mark.parametrize("argv, prog, fragment", [
    (["search", "--data", "x.csv", "--out", "o", "--space", "huge"], "defectnas search", "argument --space: invalid choice: 'huge'"),
    (["search", "--data", "x.csv", "--out", "o", "--strategy", "annealing"], "defectnas search", "argument --strategy: invalid choice"),
    (["trian", "--data", "x.csv"], "defectnas", "argument COMMAND: invalid choice: 'trian'"),
    (["search", "--data", "x.csv", "--out", "o", "--space-options", '{"title_trainable": [0, 1'], "defectnas search",
     "argument --space-options: not valid JSON: Expecting ',' delimiter at column 26 of '{\"title_trainable\": [0, 1'"),
    (["search", "--data", "x.csv", "--out", "o", "--space-options", '[3, 6]'], "defectnas search",
     "argument --space-options: must be a JSON object"),
    (["train", "--data", "x.csv"], "defectnas train", "the following arguments are required: --out"),
    (["evaluate", "--model", "m", "--data", "x.csv", "--no-such-flag"], "defectnas", "unrecognized arguments: --no-such-flag"),
])
def test_a_mistyped_command_flag_or_choice_is_refused_in_one_line(argv, prog, fragment, capsys):
    """argparse printed its whole usage block first (for search, 40 flags) and buried the one line that said what was wrong."""
    with pytest.raises(SystemExit) as stop:
        main(argv)
    err = capsys.readouterr().err
    assert stop.value.code == 2 and len(err.strip().splitlines()) == 1, err
    assert err.startswith(f"{prog}: error: ") and fragment in err and f"`{prog} --help`" in err


@pytest.mark.parametrize("command", [["train", "--data", "x.csv", "--out", "o"], ["distill-query", "--model", "m", "--data", "x.csv", "--out", "o"],
                                     ["audit", "--model", "m", "--log", "l.csv", "--out", "o"], ["serve", "--model", "m"],
                                     ["search", "--data", "x.csv", "--out", "o"]])
def test_a_negative_thread_count_is_refused_by_the_flag_not_by_torch(command, capsys):
    with pytest.raises(SystemExit) as stop:
        main(command + ["--threads", "-1"])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "argument --threads: must be 0 (the default) or more, got -1" in err and "Traceback" not in err


@pytest.mark.parametrize("command", [["train", "--data", "x.csv", "--out", "o"], ["distill-query", "--model", "m", "--data", "x.csv", "--out", "o"]])
def test_a_test_fraction_out_of_range_is_refused_by_the_flag(command, capsys):
    with pytest.raises(SystemExit) as stop:
        main(command + ["--test-frac", "1.5"])
    assert stop.value.code == 2 and "argument --test-frac: must be a share of queries from 0 to less than 1, got 1.5" in capsys.readouterr().err


def test_train_says_each_splits_defects_and_refuses_a_validation_split_without_any(tmp_path, tiny_config_file, capsys):
    """A small file of one's own can put only defect-free queries in validation: the best epoch,
    the calibration and the threshold would then be made up, so train refuses in one line (and
    --valid-frac or --seed is the way out); the split line gives each split's defects."""
    from conftest import make_pairs

    pairs = make_pairs(n_queries=40, titles_per_query=4, seed=0)
    defect_queries = sorted(pairs["query"].unique())[:6]
    pairs.loc[~pairs["query"].isin(defect_queries), "label"] = 0  # 6 of 40 queries hold defects
    pairs.to_csv(tmp_path / "few.csv", index=False)
    seen = {}
    for seed in range(12):
        code, _, stderr = run(["train", "--data", str(tmp_path / "few.csv"), "--out", str(tmp_path / f"m{seed}"), "--config",
                               str(tiny_config_file), "--epochs", "1", "--seed", str(seed)], capsys)
        split_line = next(line for line in stderr.splitlines() if "(split by query)" in line)
        seen[code] = (split_line, stderr)
        if len(seen) == 2:
            break
    assert set(seen) == {0, 2}, seen  # some seeds leave validation without a defect, some do not
    line, stderr = seen[2]
    assert "valid " in line and "(0 defects)" in line.split("valid ")[1].split(",")[0]
    assert "the validation split (" in stderr and "has no defect pair" in stderr and "--valid-frac" in stderr
    line, _ = seen[0]
    assert " defect" in line.split("valid ")[1].split(",")[0] and "(0 defects)" not in line.split("valid ")[1].split(",")[0]
    with pytest.raises(SystemExit) as stop:
        main(["train", "--data", "x.csv", "--out", str(tmp_path / "v"), "--valid-frac", "0"])
    assert stop.value.code == 2 and "argument --valid-frac: must be above 0" in capsys.readouterr().err


def test_a_model_remembers_the_column_layout_it_was_trained_with(tmp_path, synthetic_pairs, data_csv, config_json, capsys):
    """train --query-col/--title-col/--label-col/--defect-labels once; evaluate, predict and threshold
    read a table of the same layout without the flags, and say so; other tables read as before."""
    own = synthetic_pairs.rename(columns={"query": "q", "title": "t"})
    own["verdict"] = np.where(own.pop("label") == 1, "bad", "ok")
    own_csv = tmp_path / "own.csv"
    own.to_csv(own_csv, index=False)
    layout = ["--query-col", "q", "--title-col", "t", "--label-col", "verdict", "--defect-labels", "bad"]
    model = tmp_path / "model"
    assert main(["train", "--data", str(own_csv), "--out", str(model), "--config", str(config_json), "--epochs", "1", "--quiet", *layout]) == 0
    capsys.readouterr()
    assert json.loads((model / "splits.json").read_text())["layout"] == {"query_col": "q", "title_col": "t", "label_col": "verdict",
                                                                         "defect_labels": "bad"}

    code, out, err = run(["evaluate", "--model", str(model), "--data", str(own_csv), "--split", "test"], capsys)
    assert code == 0 and "read as" in err and "--query-col q --title-col t --label-col verdict --defect-labels bad" in err
    with_flags = run(["evaluate", "--model", str(model), "--data", str(own_csv), "--split", "test", *layout], capsys)
    assert with_flags[0] == 0 and json.loads(with_flags[1]) == json.loads(out) and "read as" not in with_flags[2]
    defect_rate = json.loads(out)["defect_rate"]
    assert 0 < defect_rate < 1  # 'bad' read as the defect label, 'ok' as relevant

    unlabelled = tmp_path / "next_week.csv"
    own.drop(columns=["verdict"]).head(40).to_csv(unlabelled, index=False)
    code, _, err = run(["predict", "--model", str(model), "--data", str(unlabelled), "--out", str(tmp_path / "scored.csv")], capsys)
    assert code == 0 and len(pd.read_csv(tmp_path / "scored.csv")) == 40
    assert "read as" in err and "(--query-col q --title-col t)" in err  # not the label column the unlabelled file lacks
    assert main(["threshold", "--model", str(model), "--data", str(own_csv), "--split", "valid", "--target-precision", "0.5",
                 "--quiet"]) in (0, 2)  # reads it (whether a threshold reaches the target is another matter)
    assert "missing column" not in capsys.readouterr().err

    # a table of another layout is read as before: by its own column names, and no note
    code, _, err = run(["evaluate", "--model", str(model), "--data", str(data_csv)], capsys)
    assert code == 0 and "read as" not in err


@pytest.mark.parametrize("command", ["train", "quickstart", "compare"])
def test_matching_is_on_by_default_and_no_matching_turns_it_off(command):
    """--matching alone could not change a default that is already on (helper, session 24)."""
    from defectnas.cli import _options, build_parser
    from defectnas.config import ModelConfig

    parse = lambda *flags: _options(build_parser().parse_args([command, "--data", "x", "--out", "y", *flags]))  # noqa: E731
    assert ModelConfig.matching is True and "matching" not in parse()
    assert parse("--no-matching")["matching"] is False and parse("--matching")["matching"] is True


def test_seed_help_says_what_each_command_seeds(capsys):
    """Every command takes --seed; the help said "splits, initialisation, batch order" even where nothing is seeded."""
    from defectnas.cli import main

    def help_of(command):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        return " ".join(capsys.readouterr().out.split())

    assert "--seed SEED random seed (splits, initialisation, batch order)" in help_of("train")
    for command in ("predict", "serve", "cache", "data", "download"):
        assert "--seed SEED random seed: not used by this command" in help_of(command), command
    assert "--seed SEED random seed (the bootstrap of the rates' intervals)" in help_of("audit")
