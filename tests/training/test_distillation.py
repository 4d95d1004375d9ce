"""Knowledge distillation: soft targets from a teacher's probabilities."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from defectnas import DefectClassifier
from defectnas.training.losses import distillation_loss


class FixedTeacher:
    """A stand-in teacher: graded probabilities that follow the labels (as a good cross-encoder's would)."""

    def __init__(self, table: pd.DataFrame) -> None:
        self.probs = {(q, t): 0.8 if y else 0.1 for q, t, y in zip(table["query"], table["title"], table["label"])}
        self.calls = 0

    def predict_proba(self, queries, titles):
        self.calls += 1
        return np.array([self.probs[(q, t)] for q, t in zip(queries, titles)])


def test_distillation_loss_is_smallest_at_the_teacher():
    teacher = torch.tensor([0.9, 0.2, 0.5])
    at_teacher = distillation_loss(torch.logit(teacher), teacher)
    assert distillation_loss(torch.logit(teacher) + 0.5, teacher) > at_teacher
    assert distillation_loss(torch.logit(teacher) - 0.5, teacher) > at_teacher


def _distill_loss_of(clf: DefectClassifier, table: pd.DataFrame, teacher: FixedTeacher) -> float:
    p = clf.predict_proba(table)
    soft = teacher.predict_proba(table["query"], table["title"])
    return float(distillation_loss(torch.logit(torch.tensor(p).clamp(1e-6, 1 - 1e-6)), torch.tensor(soft)))


def test_distillation_loss_decreases_on_a_tiny_table(synthetic_split, tiny_options):
    train, valid = synthetic_split["train"], synthetic_split["valid"]
    teacher = FixedTeacher(pd.concat([train, valid]))
    # the raw model's probabilities are what distillation trains (calibration would pull both towards the labels)
    options = {**tiny_options, "variant": "dl-gs", "distill_weight": 5.0, "calibration": "none"}
    before = _distill_loss_of(DefectClassifier(**{**options, "epochs": 1, "lr": 1e-9}).fit(train, valid, teacher=teacher), train, teacher)
    after = _distill_loss_of(DefectClassifier(**{**options, "epochs": 4}).fit(train, valid, teacher=teacher), train, teacher)
    assert after < 0.8 * before


def test_teacher_from_a_saved_model_directory(synthetic_split, tiny_options, fitted, tmp_path):
    """The ``teacher`` option names any saved model directory; its probabilities change training."""
    teacher_dir = fitted.save(tmp_path / "teacher")
    train, valid = synthetic_split["train"], synthetic_split["valid"]
    options = {**tiny_options, "variant": "dl-gs", "epochs": 1}
    plain = DefectClassifier(**options).fit(train, valid)
    distilled = DefectClassifier(**options, teacher=str(teacher_dir), distill_weight=2.0).fit(train, valid)
    assert distilled.train_config_.teacher == str(teacher_dir)
    assert not np.allclose(plain.predict_proba(valid), distilled.predict_proba(valid))


def test_negative_distill_weight_is_a_config_error(tiny_options):
    from defectnas.errors import ConfigError

    with pytest.raises(ConfigError, match="distill_weight"):
        DefectClassifier(**tiny_options, distill_weight=-1.0).fit(pd.DataFrame({"query": ["a"], "title": ["b"], "label": [0]}))
