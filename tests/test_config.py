"""``--config`` files: flat options, nested {"model", "train"}, and a saved model directory."""

from __future__ import annotations

import json

import pytest

from defectnas import DefectClassifier
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


# A value of the wrong type (a string where a number belongs) came out as a TypeError traceback
# from deep inside the checks or the model builder, where an unknown name was already one line.
@pytest.mark.parametrize("options, message", [
    ({"model": {"d_model": "big"}}, 'd_model must be a whole number, got "big"'),
    ({"epochs": "2"}, 'epochs must be a whole number, got "2"'),
    ({"train": {"epochs": 2.5}}, "epochs must be a whole number, got 2.5"),
    ({"lr": "0.1"}, 'lr must be a number, got "0.1"'),
    ({"lr": True}, "lr must be a number, got true"),
    ({"matching": 1}, "matching must be true or false, got 1"),
    ({"pretrained_model": None}, "pretrained_model must be a string, got null"),
    ({"title_layers": {"heads": 4}}, 'title_layers must be a list, got {"heads": 4}'),
])
def test_a_config_value_of_the_wrong_type_is_one_line_naming_the_file_and_the_option(tmp_path, options, message):
    path = tmp_path / "c.json"
    path.write_text(json.dumps(options), encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_options_file(str(path))
    assert str(info.value) == f"{path}: {message}"
    flat = {k: v for part in options.values() for k, v in part.items()} if {"model", "train"} & set(options) else options
    with pytest.raises(ConfigError, match=message.split(",")[0]):  # the Python API, at once, as for an unknown name
        DefectClassifier(**flat)


def test_whole_numbers_and_numpy_scalars_are_taken_as_their_fields_types():
    import numpy as np

    from defectnas.config import ModelConfig, TrainConfig

    model = ModelConfig(d_model=np.int64(32), matching=np.bool_(False), dropout=np.float32(0.25))
    assert (type(model.d_model), type(model.matching), type(model.dropout)) == (int, bool, float) and model.d_model == 32
    train = TrainConfig(epochs=2.0, lr=1)
    assert train.epochs == 2 and type(train.epochs) is int and train.lr == 1
    from pathlib import Path

    assert ModelConfig(pretrained_model=Path("models/minilm")).pretrained_model == str(Path("models/minilm"))  # a path, as a string
    with pytest.raises(ConfigError, match='heads must be a whole number, got "4"'):
        ModelConfig(query_layers=[{"heads": "4"}])
    with pytest.raises(ConfigError, match="query_layers must be a list of layer objects"):
        ModelConfig(query_layers=["x"])
