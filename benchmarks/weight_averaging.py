"""What makes `train`'s default less seed-bound: a moving average of the weights, the learning rate, the epoch kept?

Why: one training seed moves `train`'s default model's test AP on Home Depot by up to 0.025
(README, "Architecture search"), so 3 seeds against 3 resolve a difference of only ~±0.015 and
no candidate has beaten the default by more than that noise. Two things may feed that spread:
Adam's last steps (the weights at an epoch's end are one noisy point of the trajectory) and
which epoch early stopping keeps (chosen by F1 on a small validation split). This trains the
default and each of ``--variants`` (training options over the default's: ``ema_decay``, ``lr``,
...) under ``--seeds``, records every epoch's weights, and scores each epoch on the test split,
so one run answers both questions: per variant and selection rule (validation F1 with patience
2 = what `train` did with 4 epochs; validation AP; the last epoch; the first), test AP per seed, its mean and spread, and
a paired bootstrap over the test queries against the earlier default (no variant, 4 epochs, F1 rule), the
seeds' mean probabilities per arm.

Training runs with patience 99 so every epoch is seen; the F1 rule with patience 2 is replayed
on the recorded history (training itself does not depend on the patience, only where it stops).
Test AP is of the raw logits (no calibration; calibration is monotone and only adds ties).

    python benchmarks/weight_averaging.py --seeds 700,701,702 \
        --variants '{"ema0.99": {"ema_decay": 0.99}, "lr1e-3": {"lr": 0.001}, "lr5e-4": {"lr": 0.0005}}'

Prints a table and writes JSON (``--json``); resumable per (variant, seed) (``--work``).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
SHARED = Path(os.environ.get("DEFECTNAS_SHARED", HERE.parent.parent / "shared" / "data"))
RULES = ("f1_patience2", "valid_ap", "last", "first")  # "first": the first epoch's weights (= `--epochs 1`: no schedule depends on the epoch count)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=str(SHARED / "homedepot_sample.parquet"))
    p.add_argument("--seeds", default="700,701,702", help="training seeds (the README's default rows use 700-702)")
    p.add_argument("--variants", default='{"ema0.99": {"ema_decay": 0.99}}',
                   help="JSON: name -> training options over the default's; the default itself (\"default\") is the reference")
    p.add_argument("--split-seed", type=int, default=0, help="seed of the query split (train/valid/test)")
    p.add_argument("--epochs", type=int, default=4, help="epochs recorded per run (the earlier default, 4)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--work", default="/tmp/defectnas-weight-averaging", help="per-run results (resumable)")
    p.add_argument("--json", default=str(HERE / "results" / "weight_averaging.json"))
    args = p.parse_args(argv)
    result = run(args)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    log(f"wrote {args.json}")
    return 0


def default_options() -> dict:
    """`train`'s default model and training options (the serving space's default architecture, full budget)."""
    from defectnas.search.config import SearchConfig
    from defectnas.search.runner import final_options
    from defectnas.search.space import ServingSpace

    space = ServingSpace()
    return final_options(SearchConfig(space="serving", final_rows=0, final_epochs=0), space, space.default_architecture())


def train_one(options: dict, tables: dict, work: Path, threads: int) -> dict:
    """Fit once with patience 99; every epoch's trainable weights scored on the test split (raw logits)."""
    import torch

    from defectnas.batch import pair_logits
    from defectnas.estimator import DefectClassifier
    from defectnas.model.bert import frozen_states_memoised
    from defectnas.training import trainer
    from defectnas.training.metrics import average_precision

    torch.set_num_threads(threads)
    states: list[dict] = []
    original = trainer.predict_logits

    def recording(model, *a, **kw):  # called once per epoch, on validation, with the weights being validated
        states.append({k: v.detach().clone() for k, v in model.state_dict().items()
                       if k in {n for n, p in model.named_parameters() if p.requires_grad}})
        return original(model, *a, **kw)

    trainer.predict_logits = recording
    started = time.perf_counter()
    try:
        clf = DefectClassifier(**{**options, "patience": 99})
        clf.fit(tables["train"], tables["valid"], quiet=True)
    finally:
        trainer.predict_logits = original
    seconds = time.perf_counter() - started
    test = tables["test"]
    enc = clf._encode(test[["query", "title"]], labels=False)
    model, kept = clf.model_, {k: v.clone() for k, v in clf.model_.state_dict().items()}
    probs = []
    with frozen_states_memoised(model):
        for s in states:
            model.load_state_dict({**kept, **s})
            logits = pair_logits(model, enc.query, enc.title, 1024, "cpu")
            probs.append(1 / (1 + np.exp(-logits.astype(np.float64))))
    model.load_state_dict(kept)
    labels = test["label"].to_numpy()
    np.save(work.with_suffix(".npy"), np.stack(probs))
    history = [{k: r[k] for k in ("epoch", "valid_f1", "valid_ap", "loss")} for r in clf.history_ if "valid_ap" in r]
    for r, pr in zip(history, probs):
        r["test_ap"] = float(average_precision(labels, pr))
    return {"history": history, "train_s": round(seconds, 1)}


def run_key(variant: str, seed: int) -> str:
    """A file name stem for one run, without dots (``ema0p99_seed700``)."""
    return f"{variant}_seed{seed}".replace(".", "p")


def select(history: list[dict], rule: str) -> int:
    """Index of the epoch ``rule`` keeps."""
    if rule == "last":
        return len(history) - 1
    if rule == "first":
        return 0
    if rule == "valid_ap":
        return int(np.argmax([r["valid_ap"] for r in history]))
    best, bad, keep = -1.0, 0, 0  # `train`: best validation F1, stop after 2 epochs without a better one
    for i, r in enumerate(history):
        if r["valid_f1"] > best:
            best, bad, keep = r["valid_f1"], 0, i
        else:
            bad += 1
            if bad >= 2:
                break
    return keep


def run(args) -> dict:
    from defectnas.model.bert import share_memos_between_models
    from defectnas.search.config import SearchConfig
    from defectnas.search.runner import prepare_tables
    from defectnas.training.metrics import average_precision
    from defectnas.training.significance import average_precision_fast, paired_bootstrap

    share_memos_between_models()  # every model of this process passes a text through the frozen layers once
    tables = prepare_tables(SearchConfig(data=args.data, child_rows=0, final_rows=0, split_seed=args.split_seed))
    seeds = [int(s) for s in args.seeds.split(",")]
    variants = {"default": {}, **json.loads(args.variants)}
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    setup = {"data": str(Path(args.data).resolve()), "split_seed": args.split_seed, "epochs": args.epochs}
    if (work / "setup.json").exists() and json.loads((work / "setup.json").read_text()) != setup:
        raise SystemExit(f"{work} holds runs of another setup ({(work / 'setup.json').read_text().strip()}); give another --work")
    (work / "setup.json").write_text(json.dumps(setup))
    options = {**default_options(), "epochs": args.epochs}
    runs: dict[str, dict] = {}
    for name, changes in variants.items():
        for seed in seeds:
            key = run_key(name, seed)
            done = work / f"{key}.json"
            if not (done.exists() and done.with_suffix(".npy").exists()):
                log(f"training: {name} {json.dumps(changes)}, seed {seed}")
                res = train_one({**options, **changes, "seed": seed}, tables, work / key, args.threads)
                tmp = done.with_suffix(".part")
                tmp.write_text(json.dumps(res))
                tmp.replace(done)
            runs[key] = json.loads(done.read_text())
            log(f"  {key}: " + ", ".join(f"e{r['epoch']} valid AP {r['valid_ap']:.4f} F1 {r['valid_f1']:.4f} test AP {r['test_ap']:.4f}"
                                         for r in runs[key]["history"]))

    test = tables["test"]
    labels, queries = test["label"].to_numpy(), test["query"].to_numpy()

    def arm_probs(name: str, rule: str) -> tuple[np.ndarray, list[dict]]:
        picked, rows = [], []
        for seed in seeds:
            key = run_key(name, seed)
            h = runs[key]["history"]
            i = select(h, rule)
            picked.append(np.load(work / f"{key}.npy")[i])
            rows.append({"seed": seed, "epoch": h[i]["epoch"], "valid_ap": h[i]["valid_ap"], "valid_f1": h[i]["valid_f1"],
                         "test_ap": h[i]["test_ap"]})
        return np.stack(picked), rows

    ref, _ = arm_probs("default", "f1_patience2")
    arms = []
    for name in variants:
        for rule in RULES:
            probs, rows = arm_probs(name, rule)
            aps = [r["test_ap"] for r in rows]
            arm = {"variant": name, "options": variants[name], "rule": rule, "seeds": rows, "test_ap_mean": float(np.mean(aps)),
                   "test_ap_std": float(np.std(aps, ddof=1)) if len(aps) > 1 else 0.0,
                   "valid_ap_mean": float(np.mean([r["valid_ap"] for r in rows])),
                   "test_ap_of_mean_probs": float(average_precision(labels, probs.mean(0)))}
            if not (name == "default" and rule == "f1_patience2"):
                pb = paired_bootstrap(labels, queries, probs, ref, metric=average_precision_fast, seed=0)
                arm["paired_vs_default"] = {k: round(v, 5) if isinstance(v, float) else v for k, v in pb.items()}
            arms.append(arm)
    chosen = max(arms, key=lambda a: a["valid_ap_mean"])  # what a user could pick by: validation, not test
    print(f"\n{'variant':>12} {'rule':>13} {'epochs kept':>12} {'valid AP':>9} {'test AP per seed':>26} {'mean':>7} {'std':>7}  paired ΔAP vs default")
    for a in arms:
        pv = a.get("paired_vs_default")
        print(f"{a['variant']:>12} {a['rule']:>13} {','.join(str(r['epoch']) for r in a['seeds']):>12} {a['valid_ap_mean']:>9.4f} "
              f"{' / '.join(format(r['test_ap'], '.4f') for r in a['seeds']):>26} {a['test_ap_mean']:>7.4f} {a['test_ap_std']:>7.4f}  "
              + (f"{pv['diff']:+.4f} [{pv['ci_low']:+.4f}, {pv['ci_high']:+.4f}]" if pv else "(reference)"))
    print(f"chosen by validation AP: {chosen['variant']}, epoch kept by {chosen['rule']} ({chosen['valid_ap_mean']:.4f})")
    return {"what": f"train's default ({Path(args.data).name}, split seed {args.split_seed}, full budget, {args.epochs} epochs recorded) "
                    "and variants of its training options, every epoch scored on test; selection rules replayed on the recorded history",
            "reproduce": f"python benchmarks/weight_averaging.py --data {args.data} --split-seed {args.split_seed} --epochs {args.epochs} "
                         f"--seeds {args.seeds} --variants '{args.variants}'",
            "data": Path(args.data).name, "split_seed": args.split_seed, "epochs_recorded": args.epochs,
            "test_ap": "average precision of the defect class from raw logits (no calibration)",
            "paired_test": "paired bootstrap over test queries of the seeds' mean probabilities, against the default with the F1 rule "
                           "(what train did before epochs became 1: 4 epochs, the best by validation F1, patience 2); 1000 resamples",
            "chosen_by_valid_ap": {"variant": chosen["variant"], "rule": chosen["rule"], "valid_ap_mean": chosen["valid_ap_mean"]},
            "seeds": seeds, "variants": variants, "runs": runs, "arms": arms,
            "load_average_at_end": [round(x, 2) for x in os.getloadavg()]}


if __name__ == "__main__":
    raise SystemExit(main())
