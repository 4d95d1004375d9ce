"""Training: losses, metrics and threshold rule, and the training loop."""

from .losses import triplet_loss, weighted_bce
from .metrics import best_threshold, defect_metrics
from .trainer import Pairs, TrainResult, Triplets, predict_logits, train

__all__ = ["Pairs", "TrainResult", "Triplets", "best_threshold", "defect_metrics", "predict_logits", "train", "triplet_loss", "weighted_bce"]
