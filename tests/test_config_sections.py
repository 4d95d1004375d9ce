"""``--config`` files: every refusal names the file — an unknown option, an option under the other
section (``{"model": {"epochs": 1}}`` passed silently), a section that is not an object."""

from __future__ import annotations

import json

import pytest

from defectnas.cli import main
from defectnas.config import load_options_file
from defectnas.errors import ConfigError


def refused(tmp_path, content) -> str:
    path = tmp_path / "c.json"
    path.write_text(json.dumps(content), encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_options_file(str(path))
    message = str(info.value)
    assert message.startswith(f"{path}: ") and "\n" not in message
    return message[len(f"{path}: "):]


@pytest.mark.parametrize("content", [{"late_interation": True}, {"model": {"late_interation": True}}, {"train": {"epoch": 1}}])
def test_an_unknown_option_names_the_file(tmp_path, content):
    assert refused(tmp_path, content).startswith("unknown option(s) ")


@pytest.mark.parametrize("content, message", [
    ({"model": {"epochs": 1}}, 'epochs under "model" is a training option: put it under "train" (or at the top level)'),
    ({"train": {"d_model": 8, "late_interaction": True}, "model": {}},
     'd_model, late_interaction under "train" are model options: put them under "model" (or at the top level)'),
    ({"model": 5}, '"model" must be an object of model options, got 5'),
])
def test_an_option_in_the_wrong_section_is_refused_naming_where_it_belongs(tmp_path, content, message):
    assert refused(tmp_path, content) == message


def test_each_section_and_the_flat_form_still_read(tmp_path):
    path = tmp_path / "ok.json"
    path.write_text(json.dumps({"model": {"d_model": 8}, "train": {"epochs": 1}, "lr": 0.01}), encoding="utf-8")
    assert load_options_file(str(path)) == {"d_model": 8, "epochs": 1, "lr": 0.01}


def test_train_says_the_file_of_an_unknown_option(tmp_path, capsys):
    path = tmp_path / "typo.json"
    path.write_text(json.dumps({"late_interation": True}), encoding="utf-8")
    code = main(["train", "--data", str(tmp_path / "missing.csv"), "--out", str(tmp_path / "o"), "--config", str(path)])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith(f"error: {path}: unknown option(s) late_interation; valid options: ") and len(err.splitlines()) == 1
