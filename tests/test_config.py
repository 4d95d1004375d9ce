"""``--config`` files: flat options, nested {"model", "train"}, and a saved model directory."""

from __future__ import annotations

import json

import pytest

from defectnas.config import load_options_file
from defectnas.errors import ConfigError


def test_a_saved_model_directory_is_a_config_of_its_architecture(tmp_path, fitted, synthetic_split):
    from defectnas import DefectClassifier

    fitted.save(tmp_path / "m")
    options = load_options_file(str(tmp_path / "m"))  # the folder, or its config.json
    assert options == load_options_file(str(tmp_path / "m" / "config.json"))
    saved = json.loads((tmp_path / "m" / "config.json").read_text())
    assert options["title_layers"] == saved["model"]["title_layers"] and options["d_model"] == saved["model"]["d_model"]
    for run_option in ("epochs", "patience", "seed", "num_threads", "device"):
        assert run_option not in options  # how it was run is not what it is: train's budget applies
    again = DefectClassifier(**options, epochs=1).fit(synthetic_split["train"], synthetic_split["valid"])
    assert again.model_config_.title_layers == fitted.model_config_.title_layers
    assert again.num_parameters() == fitted.num_parameters()


def test_bad_config_files_are_one_line_errors(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_options_file(str(tmp_path / "missing.json"))
    (tmp_path / "bad.json").write_text("{", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_options_file(str(tmp_path / "bad.json"))
    (tmp_path / "unknown.json").write_text(json.dumps({"model": {"d_modle": 8}}), encoding="utf-8")
    with pytest.raises(ConfigError, match="d_modle"):
        load_options_file(str(tmp_path / "unknown.json"))
