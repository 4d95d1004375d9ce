"""``defectnas train``: --resume continues only its own run, and bad options (--device, --teacher,
--config) are one line before any data is read."""

from __future__ import annotations

import json

import pytest
import torch

from defectnas.cli import main

from test_cli import assert_one_line_error, data_csv, run  # noqa: F401  (tests/ is on sys.path; data_csv: a fixture)


def train_argv(data_csv, config, out, *extra):
    return ["train", "--data", str(data_csv), "--out", str(out), "--config", str(config), "--epochs", "1", "--keep-checkpoint",
            "--quiet", *extra]


@pytest.fixture(scope="module")
def checkpointed(tmp_path_factory, data_csv, tiny_config_path):
    """A folder holding a 1-epoch run of seed 0 and its checkpoint (copied by each test that resumes)."""
    out = tmp_path_factory.mktemp("ck") / "run"
    assert main(train_argv(data_csv, tiny_config_path, out)) == 0
    assert (out / "checkpoint.safetensors").exists()
    return out


@pytest.fixture
def run_dir(checkpointed, tmp_path):
    import shutil

    return shutil.copytree(checkpointed, tmp_path / "run")


@pytest.mark.parametrize("extra, named", [
    (["--seed", "5"], "seed 0 (now 5)"),  # another split: its test queries were trained on
    (["--variant", "dl-jl"], 'variant "dl-gs" (now "dl-jl")'),
    (["--no-matching"], "matching true (now false)"),  # another architecture: was load_state_dict's traceback
    (["--test-frac", "0.3"], "training pairs 560 (now 480)"),  # another split of the same table
])
def test_resume_refuses_a_checkpoint_of_another_run_in_one_line(run_dir, data_csv, tiny_config_path, capsys, extra, named):
    before = (run_dir / "checkpoint.safetensors").read_bytes()
    code, _, err = run(train_argv(data_csv, tiny_config_path, run_dir, "--epochs", "2", "--resume", *extra), capsys)
    assert_one_line_error(code, err, named, "rerun without --resume", "another --out")
    assert (run_dir / "checkpoint.safetensors").read_bytes() == before  # nothing trained, nothing replaced


def test_resume_refuses_other_data(run_dir, data_csv, tiny_config_path, tmp_path, capsys):
    import pandas as pd

    other = tmp_path / "other.csv"
    df = pd.read_csv(data_csv)
    df.assign(label=1 - df["label"]).to_csv(other, index=False)  # the same queries and titles, labelled otherwise
    code, _, err = run(train_argv(other, tiny_config_path, run_dir, "--resume"), capsys)
    assert_one_line_error(code, err, "training pairs (now 560 other ones)", "validation pairs")


def test_resume_with_more_epochs_continues(run_dir, data_csv, tiny_config_path, capsys):
    code, out, err = run(train_argv(data_csv, tiny_config_path, run_dir, "--epochs", "2", "--resume", "--threads", "1"), capsys)
    assert code == 0, err
    assert [h["epoch"] for h in json.loads((run_dir / "config.json").read_text())["history"]] == [1, 2]


def test_resume_into_a_folder_without_a_checkpoint_says_so_even_when_quiet(tmp_path, data_csv, tiny_config_path, capsys):
    code, _, err = run(train_argv(data_csv, tiny_config_path, tmp_path / "new", "--resume"), capsys)
    assert code == 0
    assert err.strip().splitlines() == [f"note: --resume: no checkpoint in {tmp_path / 'new'} to resume from: starting from scratch"]


def test_a_teacher_that_is_a_file_is_one_line_before_the_data_is_read(tmp_path, data_csv, tiny_config_path, capsys):
    missing = tmp_path / "missing.csv"  # never read: the teacher is refused first
    code, _, err = run(train_argv(missing, tiny_config_path, tmp_path / "m", "--teacher", str(data_csv)), capsys)
    assert_one_line_error(code, err, f"{data_csv}: not a model directory (a file")
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize("device, fragment", [("gpu", "'gpu' is not a torch device"), ("cuda", "no cuda device available here")])
@pytest.mark.parametrize("command", ["train", "compare", "quickstart"])
def test_a_device_torch_cannot_use_is_refused_when_the_flag_is_parsed(monkeypatch, tmp_path, capsys, command, device, fragment):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # a CPU-only build (as on the machine that found it)
    argv = [command, "--data", str(tmp_path / "missing.csv"), "--out", str(tmp_path / "o"), "--device", device]
    with pytest.raises(SystemExit) as info:
        main(argv)
    err = capsys.readouterr().err
    assert info.value.code == 2 and f"argument --device: device {device!r}" in err and fragment in err and "Traceback" not in err


def test_a_device_in_a_config_file_is_checked_too(monkeypatch, tmp_path, data_csv, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    config = tmp_path / "gpu.json"
    config.write_text(json.dumps({"train": {"device": "cuda"}}), encoding="utf-8")
    code, _, err = run(["train", "--data", str(tmp_path / "missing.csv"), "--out", str(tmp_path / "o"), "--config", str(config)], capsys)
    assert_one_line_error(code, err, f"{config}: device 'cuda'", "use cpu")


def test_a_bad_option_is_refused_before_the_data_is_read(tmp_path, tiny_config_path, capsys):
    code, _, err = run(train_argv(tmp_path / "missing.csv", tiny_config_path, tmp_path / "m", "--lr", "-1"), capsys)
    assert_one_line_error(code, err, "lr must be a finite number more than 0")
