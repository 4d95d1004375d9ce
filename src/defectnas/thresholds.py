"""Operating points: the threshold for a target precision or recall, globally or per group.

Why: the F1-best threshold is one arbitrary trade-off. A team that reviews every flagged pair
wants "90% of what we flag is a defect" (a target precision); a team that audits wants "we catch
80% of defects" (a target recall). ``defectnas threshold`` sets that operating point on labelled
data (normally the validation split) and saves it into the model's ``config.json`` with how it was
chosen. Optionally one threshold per group (``--by product_locale``): locales and categories differ
in defect rate and score scale. A group with too little data to pin a threshold down (fewer than
``min_group`` pairs or ``min_group_defects`` defects) — or where the target cannot be reached —
uses the global threshold instead, and says so in the saved record.

Rule for a target precision P: of the thresholds whose precision on the data is at least P, the
one with the highest recall (ties: the highest precision). For a target recall R: of the
thresholds whose recall is at least R, the one with the highest precision. Thresholds are
compared on the model's (calibrated) probabilities; a pair is a defect when its probability is at
least the threshold.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .errors import DataError

MIN_GROUP = 200  # default --min-group: pairs a group needs for a threshold of its own
MIN_GROUP_DEFECTS = 20  # default --min-group-defects: defects a group needs for a threshold of its own
MIN_FLAGGED = 20  # default --min-flagged: pairs a target precision must be measured on


class TargetUnreachable(DataError):
    """The target precision/recall is not reached at any threshold (the message names the best)."""


def target_threshold(labels: np.ndarray, probs: np.ndarray, metric: str, target: float,
                     min_flagged: int = MIN_FLAGGED) -> dict[str, float]:
    """``{"threshold", "precision", "recall", "flagged", "precision_low", "precision_high"}`` of the
    operating point for ``metric`` ∈ {"precision", "recall"} ≥ ``target``; TargetUnreachable
    naming the best achievable value.

    A target precision counts only where at least ``min_flagged`` pairs are flagged: "precision
    1.0" on one flagged pair says nothing (its 95% Wilson interval is [0.21, 1]), and a team that
    set it would get a threshold that flags almost nothing on new data. The Wilson score interval
    of the chosen point's precision is returned with it.
    """
    from .training.metrics import wilson_interval

    if metric not in ("precision", "recall"):
        raise DataError(f"metric must be precision or recall, got {metric!r}")
    if not 0.0 < target <= 1.0:
        raise DataError(f"target {metric} must be in (0, 1], got {target}")
    labels = np.asarray(labels).astype(np.int64)
    if labels.sum() == 0:
        raise TargetUnreachable(f"target {metric} {target:g} not reachable: the data has no defects")
    from sklearn.metrics import precision_recall_curve  # here, not at import: sklearn costs ~1.3 s to import

    precision, recall, thresholds = precision_recall_curve(labels, np.asarray(probs, dtype=np.float64))
    precision, recall = precision[:-1], recall[:-1]  # the last point (recall 0) has no threshold
    tp = np.rint(recall * labels.sum()).astype(np.int64)
    flagged = np.rint(tp / np.maximum(precision, 1e-12)).astype(np.int64)
    if metric == "precision":
        supported = flagged >= min_flagged
        ok = (precision >= target) & supported
        if not supported.any():
            raise TargetUnreachable(f"target precision {target:g} not measurable: even the lowest threshold flags only "
                                    f"{int(flagged.max())} pairs, fewer than --min-flagged {min_flagged}")
        if not ok.any():
            best = int(np.argmax(np.where(supported, precision, -1.0)))
            only = ""
            if (precision >= target).any():
                k = int(flagged[precision >= target].max())
                only = f"; {target:g} is reached only with {k} flagged pairs, fewer than --min-flagged {min_flagged}"
            raise TargetUnreachable(f"target precision {target:g} not reachable: the best achievable precision with at least "
                                    f"{min_flagged} flagged pairs is {precision[best]:.4f} (recall {recall[best]:.4f}, threshold "
                                    f"{thresholds[best]:.4g}){only}")
        candidates = np.flatnonzero(ok)
        i = candidates[np.lexsort((precision[candidates], recall[candidates]))[-1]]  # max recall, then max precision
    else:
        ok = recall >= target
        if not ok.any():  # cannot happen with a defect present (the lowest threshold flags everything)
            raise TargetUnreachable(f"target recall {target:g} not reachable: the best achievable recall is {recall.max():.4f}")
        candidates = np.flatnonzero(ok)
        i = candidates[np.lexsort((thresholds[candidates], precision[candidates]))[-1]]  # max precision, then max threshold
    low, high = wilson_interval(int(tp[i]), int(flagged[i]))
    return {"threshold": float(thresholds[i]), "precision": float(precision[i]), "recall": float(recall[i]),
            "flagged": int(flagged[i]), "precision_low": float(low), "precision_high": float(high)}


def choose_operating_point(labels: np.ndarray, probs: np.ndarray, metric: str, target: float, data_name: str,
                           groups: pd.Series | None = None, column: str | None = None, min_group: int = MIN_GROUP,
                           min_group_defects: int = MIN_GROUP_DEFECTS, min_flagged: int = MIN_FLAGGED
                           ) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """(operating point record, per-group record or None) for a target on labelled data."""
    labels = np.asarray(labels).astype(np.int64)
    point = target_threshold(labels, probs, metric, target, min_flagged)
    record = {"rule": f"target-{metric}", "target": float(target), "data": data_name, "n": int(len(labels)),
              "defects": int(labels.sum()), **point, "set_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    if groups is None:
        return record, None
    keys = groups.astype(str).to_numpy()
    per_group, fallback = {}, {}
    for value in sorted(set(keys)):
        mask = keys == value
        n, d = int(mask.sum()), int(labels[mask].sum())
        if n < min_group or d < min_group_defects:
            short = [f"{n} pairs, fewer than {min_group}"] * (n < min_group) + [f"{d} defects, fewer than {min_group_defects}"] * (d < min_group_defects)
            fallback[value] = {"n": n, "defects": d, "reason": " and ".join(short)}
            continue
        try:
            per_group[value] = {"n": n, "defects": d, **target_threshold(labels[mask], np.asarray(probs)[mask], metric, target, min_flagged)}
        except TargetUnreachable as e:
            fallback[value] = {"n": n, "defects": d, "reason": str(e)}
    by_group = {"column": column, "min_group": int(min_group), "min_group_defects": int(min_group_defects),
                "thresholds": per_group, "fallback": fallback,
                "note": "groups not listed under thresholds (including values never seen here) use the global threshold"}
    # what the rows' own thresholds reach together on these pairs (the record's figures are the global threshold's)
    from .training.metrics import defect_metrics

    rows = apply_group_thresholds(groups, by_group, point["threshold"])
    together = defect_metrics(labels, probs, point["threshold"], rows)
    by_group["together"] = {**{k: together[k] for k in ("precision", "precision_low", "precision_high", "recall")},
                            "flagged": int((np.asarray(probs) >= rows).sum())}
    return record, by_group


def apply_group_thresholds(values: pd.Series, groups: dict[str, Any], global_threshold: float) -> np.ndarray:
    """One threshold per row: its group's, or the global one for groups without their own."""
    table = {k: float(v["threshold"]) for k, v in groups.get("thresholds", {}).items()}
    keys = pd.Series(values).astype(str)
    return keys.map(table).fillna(global_threshold).to_numpy(dtype=np.float64)


def rule_text(record: dict[str, Any], groups: dict[str, Any] | None = None) -> str:
    """A one-line account of the operating point, for config.json's threshold_rule."""
    text = f"{record['rule'].replace('target-', '')} >= {record['target']:g} on {Path(record['data']).name}"
    if groups:
        text += f", per {groups['column']} ({len(groups['thresholds'])} groups; the rest global)"
    return text


def save_operating_point(model_dir: str | Path, record: dict[str, Any], groups: dict[str, Any] | None) -> Path:
    """Write the operating point into the model directory's config.json (atomically)."""
    from .storage import atomic_write_json

    path = Path(model_dir) / "config.json"
    config = json.loads(path.read_text(encoding="utf-8"))
    config["operating_point"] = {**record, "previous_threshold": config.get("threshold"),
                                 "previous_rule": config.get("threshold_rule", "f1-best on validation")}
    config["threshold"] = record["threshold"]
    config["threshold_rule"] = rule_text(record, groups)
    if groups:
        config["group_thresholds"] = groups
    else:
        config.pop("group_thresholds", None)  # a new global operating point replaces old per-group ones
    atomic_write_json(path, config)
    return path
