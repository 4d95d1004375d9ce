"""Training keeps the epoch of best validation F1 (at that epoch's F1-best threshold) — what the
README's worked example says it does, while quickstart picks the variant by validation AP."""

from __future__ import annotations


def test_train_keeps_the_epoch_of_best_validation_f1(fitted):
    history = [r for r in fitted.history_ if r.get("phase") == "classify"]
    kept = max(history, key=lambda r: r["valid_f1"])  # the first of equals, as the trainer's strict ">" keeps it
    assert fitted.valid_ap_ == kept["valid_ap"]
