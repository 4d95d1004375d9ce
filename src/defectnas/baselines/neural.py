"""``lstm`` and ``coattention``: the two-tower classifier with another encoder or interaction.

Why factories and not new classes: both baselines are the same
:class:`~defectnas.estimator.DefectClassifier` — same tokenizer, embeddings, losses, training
loop, threshold rule and model directory — with one field of
:class:`~defectnas.config.ModelConfig` changed, so the comparison isolates exactly that change
and ``DefectClassifier.load(dir)`` reads them back.
"""

from __future__ import annotations

from typing import Any

LSTM_OPTIONS = {"encoder": "lstm"}  # bidirectional LSTM towers in place of the transformer cells
COATTENTION_OPTIONS = {"interaction": "coattention"}  # word-by-word co-attention in place of the pooled interaction


def lstm_classifier(**options: Any):
    """A DefectClassifier with bidirectional-LSTM query and title encoders."""
    from ..estimator import DefectClassifier

    return DefectClassifier(**{**options, **LSTM_OPTIONS})


def coattention_classifier(**options: Any):
    """A DefectClassifier whose head compares the towers' tokens by co-attention."""
    from ..estimator import DefectClassifier

    return DefectClassifier(**{**options, **COATTENTION_OPTIONS})
