"""After the retrains: a faster copy of ``best/`` by distilling its query tower, put on the front.

Why this step belongs to the search: a request's cost grows with the query tower's pre-trained
layers, and the search's own children with fewer query layers, trained from the labels, lose
0.02–0.05 AP on Home Depot — no architecture of the space served 2× faster within 0.005 AP.
A *student* that starts as the best model's bottom K − 1 query layers and its top one and is
taught to reproduce its query encodings (:mod:`defectnas.training.query_distillation`, the
``distill-query`` command) kept the teacher's AP at 2.3× the speed (README, "Product goal").
So the search ends by distilling the model it recommends, measures the student exactly as it
measured every candidate (validation metric, served ms per request, test probabilities and a
paired test), and puts it on the Pareto front (``pareto/<n>/``) when no retrained candidate
dominates it; it is also saved as ``distilled/``. Its title tower and head are the teacher's,
so the teacher's product caches serve it.

The student is one model, distilled from the teacher's first retrain seed (the one saved), so
its paired tests are against that seed's probabilities (what distillation lost) and against
``train``'s default as retrained (what the search delivers). The student never becomes
``best/``: ``best/`` is chosen before it exists, among architectures trained from labels.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..errors import ConfigError
from ..storage import append_line, atomic_write_json
from ..timing import interleaved_ms

DISTILLED_DIR = "distilled"
CHECKPOINT_DIR = "distill"  # the distillation's checkpoint while it runs (a killed search resumes it)
# measured on 2 CPU cores, MiniLM, 2-layer student, Home Depot's ~34k texts: 4 epochs took 333 s on one machine; on one
# half as fast (and shared) 1 epoch took 126 s after ~190 s of the teacher encoding the texts and validation once
S_PER_TEXT_EPOCH = 2.0e-3  # each epoch, per text
S_PER_TEXT_ONCE = 2.5e-3  # once per distillation, per text: the teacher's encodings, validation, timing
# ...and those rates hold on a machine whose frozen pass (the noise floor's first repeat running MiniLM's frozen layers over
# every child text) takes this long per text. Fitted to four default Home Depot searches (41,107 texts, 4 epochs: 10.5 ms a
# text at factor 1) on machines whose pass took 4.42, 5.31, 5.54 and 5.94 ms a text: their distillations took 575, 690, 699
# and 727 s, and 3.40 ms predicts 562, 673, 702 and 752 (within 4%). The earlier 2.56 ms, inferred from the first run alone,
# reserved 1.3-1.4x what the later three took: ~4 minutes of a 30-minute budget left unsampled.
REF_FROZEN_S_PER_TEXT = 3.40e-3
LATENCY_ROUNDS = 3  # models timed in turn this many times (teacher and student here; every saved model in final.py)


def _epoch_sentences(say: Callable[[str], None], epochs: int) -> Callable[[str], None]:
    """``say`` for the distillation's log: its per-epoch JSON records (what ``distill-query`` prints,
    one line per epoch) become sentences like the rest of the search's log; other lines pass."""
    def log(line: str) -> None:
        try:
            r = json.loads(line)
        except ValueError:
            return say(line)
        if not isinstance(r, dict) or "epoch" not in r:
            return say(line)
        say(f"distillation epoch {r['epoch']} of {epochs}: loss {r.get('loss', float('nan')):.4f}, "
            f"valid AP {r.get('valid_ap', float('nan')):.4f}, {r.get('seconds', 0.0):.0f}s")

    return log


def student_key(teacher_key: str, layers: int) -> str:
    """The student's key in ``retrain.jsonl`` and ``test_probs/``: its teacher's and its depth."""
    return f"{teacher_key}-q{layers}"


def student_architecture(architecture: Any, layers: int) -> Any:
    """The architecture the student has: a serving-space one with a ``layers``-layer query tower,
    all fine-tuned; otherwise (the seed space, which does not decide the query tower) the teacher's."""
    if isinstance(architecture, dict) and "query_layers" in architecture:
        return {**architecture, "query_layers": layers, "query_trainable": layers}
    return architecture


def estimate_texts(train) -> int:
    """About how many query-like texts :func:`~defectnas.training.query_distillation.query_like_texts`
    makes of a training table: each distinct query, most once more less a word, a prefix per title."""
    queries = train["query"].drop_duplicates()
    return int(len(queries) + (queries.str.count(" ") > 0).sum() + train["title"].nunique())


def deepest_query_layers(cfg, space) -> int:
    """The most pre-trained query layers a model of this search can have: the serving space's
    deepest ``query_layers`` option; otherwise (the seed space) the base model's
    ``query_backbone_layers``. 0: no model has any, so none can be distilled."""
    from ..config import ModelConfig

    options = getattr(space, "query_layers", ()) or (int(cfg.options.get("query_backbone_layers", ModelConfig.query_backbone_layers)),)
    return max(options)


def check_layers(cfg, space) -> None:
    """ConfigError, before anything runs, when ``--distill-query K`` could never apply: a student
    needs fewer pre-trained query layers than its teacher, and no model of this search has more
    than :func:`deepest_query_layers` (with none at all, final.json says why nothing was distilled)."""
    deepest = deepest_query_layers(cfg, space)
    if cfg.distill_query and 0 < deepest <= cfg.distill_query:
        raise ConfigError(f"--distill-query {cfg.distill_query}: a distilled query tower needs fewer pre-trained layers than its "
                          f"teacher's, and this search's models have at most {deepest}; give 1 to {deepest - 1}, or 0 for none")


def distill_estimate_s(cfg, tables, space, floor: dict[str, Any] | None = None) -> float:
    """Seconds the distillation step is expected to take (0 when it is off or no model can be
    distilled): texts × (epochs × :data:`S_PER_TEXT_EPOCH` + :data:`S_PER_TEXT_ONCE`), rates
    measured on 2 CPU cores (conservative on a GPU), × :func:`machine_factor` of the noise floor."""
    if not cfg.distill_query or "distill" not in tables or not deepest_query_layers(cfg, space):
        return 0.0
    rate = cfg.distill_epochs * S_PER_TEXT_EPOCH + S_PER_TEXT_ONCE
    return estimate_texts(tables["distill"]) * rate * machine_factor(floor)


def machine_factor(floor: dict[str, Any] | None) -> float:
    """How much slower (> 1) or faster this machine runs MiniLM's layers than the one the
    distillation's rates were measured on: the noise floor's frozen pass, seconds per text, over
    :data:`REF_FROZEN_S_PER_TEXT`; kept within 0.5–4. 1 when the floor has not measured it (a floor
    logged by an earlier version). Why: the children's and retrains' costs are measured in the
    search itself, the distillation's only estimated, and a slower machine overran the budget by
    10% on it (575 s against 354 estimated)."""
    per_text = float((floor or {}).get("frozen_s_per_text") or 0.0)
    if not per_text:
        return 1.0
    return float(min(4.0, max(0.5, per_text / REF_FROZEN_S_PER_TEXT)))


def distill_best(cfg, space, out: Path, best: dict[str, Any], done: dict[str, dict[str, Any]], tables,
                 log_path: Path, probs_dir: Path, stamp: str, quiet: bool, say: Callable[[str], None],
                 floor: dict[str, Any] | None = None) -> dict[str, Any]:
    """Distil ``best`` (a retrained candidate's row, its model in ``out/retrain/<key>``) into a
    ``cfg.distill_query``-layer query tower; save it to ``out/retrain/<student key>`` (stamped),
    its test probabilities to ``probs_dir`` and its entry to ``log_path``; return the entry.

    Returns ``{"key", "skipped": why}`` instead, and says why, when the model cannot be distilled
    (no pre-trained query layers, or not more of them than ``cfg.distill_query``). A student already in ``done`` with its model
    and probabilities is not distilled again; a killed distillation resumes from its checkpoint
    (one of another teacher is dropped)."""
    from ..estimator import DefectClassifier
    from ..training.query_distillation import student_config
    from ..training.trainer import CHECKPOINT
    from .child import _predict_memoised

    layers, teacher_dir = int(cfg.distill_query), out / "retrain" / best["key"]
    key = student_key(best["key"], layers)
    model_dir = out / "retrain" / key
    has_test = "test" in tables
    if key in done and (model_dir / "config.json").exists() and (not has_test or (probs_dir / f"{key}.npy").exists()):
        return done[key]
    teacher = DefectClassifier.load(teacher_dir, device=str(cfg.options.get("device", "cpu")))
    try:
        student_config(teacher.model_config_, layers)
    except ConfigError as e:
        have = teacher.model_config_.query_backbone_layers
        why = (f"best/'s query tower already has only {have} pre-trained layer{'s' if have != 1 else ''}, not more than "
               f"--distill-query {layers}: nothing to distil" if 0 < have <= layers else str(e))
        say(f"no distilled model: {why}")
        return {"key": key, "skipped": why}
    started = time.perf_counter()
    ckpt = out / CHECKPOINT_DIR
    estimate = distill_estimate_s(cfg, tables, space, floor)
    say(f"distilling best/'s {teacher.model_config_.query_backbone_layers}-layer query tower into {layers} layer{'s' if layers != 1 else ''} "
        f"({cfg.distill_epochs} epoch{'s' if cfg.distill_epochs != 1 else ''}; ≈ "
        + (f"{estimate / 60:.1f} min" if estimate >= 60 else f"{estimate:.0f} s") + " on this machine)")
    kwargs = dict(layers=layers, epochs=cfg.distill_epochs, seed=cfg.seed, checkpoint_dir=ckpt, quiet=quiet,
                  log=_epoch_sentences(say, cfg.distill_epochs))
    try:
        student = teacher.distill_query(tables["distill"], tables["valid"], resume=(ckpt / CHECKPOINT).exists(), **kwargs)
    except ConfigError:  # a checkpoint of another teacher or K (the search was extended or resumed with another --distill-query)
        say(f"the checkpoint in {ckpt} is of another distillation (teacher or --distill-query): starting again")
        shutil.rmtree(ckpt, ignore_errors=True)
        student = teacher.distill_query(tables["distill"], tables["valid"], **kwargs)

    entry: dict[str, Any] = {
        "key": key, "architecture": student_architecture(best["architecture"], layers), "distilled_from": best["key"],
        "query_layers": layers, "epochs": cfg.distill_epochs, "seeds": best["seeds"][:1],
        "valid_ap": round(float(student.valid_ap_), 6), "valid_f1": round(float(student.valid_f1_), 6),
        "teacher_valid_ap_seed": round(float(best["valid_ap_seeds"][0]), 6),
        "params": sum(p.numel() for n, p in student.model_.query_encoder.named_parameters() if not n.startswith("embed.backbone")),
    }  # params: what the distillation trained (the student's own query tower), as a child counts its trainable ones
    entry["valid_metric"] = entry["valid_ap"] if cfg.reward_metric == "ap" else entry["valid_f1"]
    entry["valid_metric_std"] = 0.0
    if has_test:
        from ..training.metrics import average_precision, defect_metrics

        test = tables["test"]
        probs = np.asarray(_predict_memoised(student, test), dtype=np.float64)  # as the candidates' (child.py): float32 ties move AP
        metrics = {**defect_metrics(test["label"].to_numpy(), probs, student.threshold_),
                   "average_precision": average_precision(test["label"].to_numpy(), probs)}
        entry.update(test=[metrics], test_ap=round(float(metrics["average_precision"]), 6), test_ap_std=0.0,
                     test_f1=round(float(metrics["f1"]), 6))
        if best.get("test"):
            entry["teacher_test_ap_seed"] = round(float(best["test"][0]["average_precision"]), 6)
    for clf in (teacher, student):  # trained on an accelerator: served latency is still timed on the CPU (as a child's)
        if clf.train_config_.device != "cpu":
            clf.model_.to("cpu")
            clf.train_config_.device = "cpu"
    served = served_side_by_side({"teacher": teacher, "student": student}, tables["valid"], cfg.latency_repeats)
    entry["latency_ms"] = float(np.median(served["student"]))
    entry["teacher_latency_ms"] = float(np.median(served["teacher"]))
    entry["served_ms"] = served
    entry["speedup_over_teacher"] = round(float(np.median(served["teacher"]) / entry["latency_ms"]), 3)
    shutil.rmtree(model_dir, ignore_errors=True)
    student.save(model_dir)
    if has_test:
        atomic_write_json(model_dir / "metrics.json", metrics)
        probs_dir.mkdir(parents=True, exist_ok=True)
        tmp = probs_dir / f"{key}.part.npy"
        np.save(tmp, probs[None, :])
        tmp.replace(probs_dir / f"{key}.npy")
    atomic_write_json(model_dir / stamp, {"key": key, "space": cfg.space, "architecture": entry["architecture"],
                                          "distilled_from": best["key"]})
    entry["seconds"] = round(time.perf_counter() - started + restored_seconds(student.history_), 3)
    append_line(log_path, json.dumps(entry))
    shutil.rmtree(ckpt, ignore_errors=True)
    say(f"distilled {layers}-layer query tower: valid AP {entry['valid_ap']:.4f} against its teacher's {entry['teacher_valid_ap_seed']:.4f} "
        f"(the teacher is best/ as saved: its first retrain seed), {entry['latency_ms']:.2f} against {entry['teacher_latency_ms']:.2f} "
        f"ms/request timed alternately ({entry['speedup_over_teacher']:.2f}x faster), {entry['seconds']:.0f}s")
    return entry


def served_side_by_side(models: dict[str, Any], valid, repeats: int) -> dict[str, list[float]]:
    """``{name: [served ms of each round]}``: each model timed as a child is (1 query × 100 cached
    products of ``valid``, 1 thread, :func:`.child.served_latency_ms`), the models taken in turn
    in ``LATENCY_ROUNDS`` rounds (:func:`defectnas.timing.interleaved_ms`). The teacher beside its
    student here; every saved model at the end of a search (:func:`.final.time_models`)."""
    from .child import latency_inputs, served_latency_ms

    queries, titles = latency_inputs(valid)
    return interleaved_ms(models, lambda clf: served_latency_ms(clf, queries, titles, repeats, threads=1), LATENCY_ROUNDS)


def restored_seconds(history: list[dict[str, Any]]) -> float:
    """Seconds of the epochs a resumed distillation restored from its checkpoint (a student's
    ``history_``: its head record says after which epoch it resumed), so that a student's
    ``seconds`` count the whole distillation, not only the part after the resume."""
    if not history:
        return 0.0
    after = int(history[0].get("resumed_after_epoch", 0))
    return float(sum(r.get("seconds", 0.0) for r in history[1:] if 0 < r.get("epoch", 0) <= after))


def dominated(entry: dict[str, Any], rows: list[dict[str, Any]]) -> bool:
    """Whether some row is at least as fast and as accurate (validation metric) as ``entry``, and better in one."""
    return any(r["latency_ms"] <= entry["latency_ms"] and r["valid_metric"] >= entry["valid_metric"]
               and (r["latency_ms"] < entry["latency_ms"] or r["valid_metric"] > entry["valid_metric"]) for r in rows)
