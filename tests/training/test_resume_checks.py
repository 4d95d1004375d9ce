"""``train(..., resume=True)`` continues only the run its checkpoint was made by.

A resume used to continue any checkpoint in the folder: weights trained on one split's training
queries went on under another seed's split (whose test queries they had learned), on another
table, or under another loss; another architecture ended in load_state_dict's traceback.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from defectnas.errors import ConfigError
from defectnas.storage import load_tensors, save_tensors
from defectnas.training import Pairs, train
from defectnas.training.trainer import CHECKPOINT

from .test_trainer import cfg, data, make_model  # noqa: F401  (data: the module's fixture)


@pytest.fixture
def checkpointed(data, tmp_path):  # noqa: F811
    """A 1-epoch run with its checkpoint in tmp_path."""
    tok, tr, va, _ = data
    train(make_model(tok), cfg(epochs=1), tr, va, checkpoint_dir=tmp_path, quiet=True)
    return tmp_path


def resume(data, folder, config=None, model=None, tr=None, va=None, log=None):  # noqa: F811
    tok, tr0, va0, _ = data
    return train(model or make_model(tok), config or cfg(epochs=2), tr or tr0, va or va0, checkpoint_dir=folder, resume=True,
                 quiet=True, log=log)


def test_the_same_run_resumes_with_more_epochs_or_patience(data, checkpointed):  # noqa: F811
    from defectnas.training.trainer import RESUMABLE

    logged = []
    result = resume(data, checkpointed, cfg(epochs=3, patience=5, calibration="sigmoid", num_threads=1), log=logged.append)
    assert "after epoch 1" in logged[0] and [h["epoch"] for h in result.history] == [1, 2, 3]
    assert set(RESUMABLE) == {"epochs", "patience", "num_threads", "device", "calibration"}


@pytest.mark.parametrize("change, named", [
    ({"seed": 5}, "seed 0 (now 5)"),
    ({"defect_weight": 5.0}, "defect_weight 10.0 (now 5.0)"),
    ({"lr": 1e-3}, "lr 0.003 (now 0.001)"),
])
def test_other_training_options_are_refused_naming_them(data, checkpointed, change, named):  # noqa: F811
    with pytest.raises(ConfigError) as info:
        resume(data, checkpointed, cfg(epochs=2, **change))
    message = str(info.value)
    assert named in message and "\n" not in message
    assert "rerun without --resume" in message and "another --out" in message


def test_other_data_or_split_is_refused_naming_it(data, checkpointed):  # noqa: F811
    _, tr, va, _ = data
    fewer = Pairs(tr.query[:-8], tr.title[:-8], tr.label[:-8])
    with pytest.raises(ConfigError, match=r"training pairs 192 \(now 184\)"):
        resume(data, checkpointed, tr=fewer)
    relabelled = dataclasses.replace(va, label=1 - va.label)  # as many rows, other content
    with pytest.raises(ConfigError, match=r"validation pairs \(now 80 other ones\)"):
        resume(data, checkpointed, va=relabelled)


def test_another_architecture_is_one_line_not_a_load_state_dict_traceback(data, checkpointed):  # noqa: F811
    tok = data[0]
    other = make_model(tok)
    wider = type(other)(dataclasses.replace(other.cfg, dense_hidden=32))
    with pytest.raises(ConfigError, match=r"dense_hidden 16 \(now 32\)"):
        resume(data, checkpointed, model=wider)


def without_run_record(folder) -> None:
    """The checkpoint as an earlier defectnas wrote it: no record of its model and data."""
    tensors, meta = load_tensors(folder / CHECKPOINT)
    del meta["run"]
    save_tensors(folder / CHECKPOINT, tensors, meta)


def test_a_checkpoint_of_an_earlier_version_still_resumes_with_a_note(data, checkpointed):  # noqa: F811
    without_run_record(checkpointed)
    logged = []
    result = resume(data, checkpointed, log=logged.append)
    assert "earlier defectnas" in logged[0] and "after epoch 1" in logged[1]
    assert [h["epoch"] for h in result.history] == [1, 2]
    without_run_record(checkpointed)
    with pytest.raises(ConfigError, match="seed 0 \\(now 5\\)"):  # its training options are still checked
        resume(data, checkpointed, cfg(epochs=2, seed=5))
    tok = data[0]
    wider = type(make_model(tok))(dataclasses.replace(make_model(tok).cfg, dense_hidden=32))
    with pytest.raises(ConfigError, match="another architecture"):  # unrecorded: load_state_dict's error, as one line
        resume(data, checkpointed, model=wider)


def test_resume_without_a_checkpoint_says_it_starts_from_scratch(data, tmp_path):  # noqa: F811
    logged = []
    result = resume(data, tmp_path / "empty", cfg(epochs=1), log=logged.append)
    assert logged[0].startswith("note: no checkpoint in") and "from scratch" in logged[0]
    assert len(result.history) == 1 and np.isfinite(result.history[0]["loss"])
