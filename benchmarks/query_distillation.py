"""Issue 19's product goal with a distilled query tower: ``defectnas distill-query`` measured over teacher seeds.

Why: a request's cost falls with the query tower's pre-trained layers (6 in ``train``'s
default). ``DefectClassifier.distill_query`` trains a K-layer query tower to reproduce the
6-layer one (its encodings), keeping the title tower, the head and so every product cache. This
asks, as the product goal does: how much faster does it serve, and how much test AP does it
lose, over several seeds, with a paired test?

What it does, for each teacher (``--model``, repeatable; or trained here with ``--train-seeds``:
``train``'s default options on the same split): split the table by query as ``train`` does
(``--split-seed``, valid 10%, test 20%), distil on the training split (the teacher's seed for the
student too), score the test split with the raw logits of both, and time ``serve``'s request of
1 query × 100 cached products for both (1 thread, interleaved rounds). Then the paired bootstrap
over test queries of the mean AP across seeds (students against their own teachers).

    python benchmarks/query_distillation.py --model MODEL_DIR --layers 2 --epochs 4
    python benchmarks/query_distillation.py --model MODEL_DIR --train-seeds 701,702 --work /tmp/qd

Prints a table and writes JSON (``--json``); resumable per teacher seed (``--work``).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = HERE.parent.parent / "shared" / "data" / "homedepot_sample.parquet"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", action="append", default=[], help="a teacher: a model directory trained on --data (repeatable)")
    p.add_argument("--train-seeds", default="", help="also train train's default model under these seeds as teachers (e.g. 701,702)")
    p.add_argument("--data", default=str(DEFAULT_DATA), help="the pairs table the teachers were trained on")
    p.add_argument("--split-seed", type=int, default=0, help="the split's seed (as train --seed)")
    p.add_argument("--layers", type=int, default=2, help="pre-trained layers of the student's query tower")
    p.add_argument("--epochs", type=int, default=4, help="as distill-query's default")
    p.add_argument("--text-windows", type=int, default=0, help="as distill-query's default")
    p.add_argument("--init", default="bottom+top", help="as distill-query's default")
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--logit-weight", type=float, default=0.0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3, help="interleaved latency rounds per teacher")
    p.add_argument("--work", default="/tmp/defectnas-query-distillation", help="teachers, students and partial results")
    p.add_argument("--json", default=str(HERE / "results" / "query_distillation.json"))
    args = p.parse_args(argv)
    write_result(args.json, run(args))
    return 0


def write_result(path: str, result: dict) -> None:
    """The benchmark's JSON at ``path`` (its folder made)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {path}")


def query_split(args: argparse.Namespace) -> dict:
    """train / valid / test parts of ``--data`` by query, as ``train`` splits with ``--split-seed``."""
    from defectnas.data import load_pairs, split_by_query

    return split_by_query(load_pairs(args.data), valid_frac=0.1, test_frac=0.2, seed=args.split_seed)


def run(args: argparse.Namespace) -> dict:
    import torch

    from defectnas import DefectClassifier
    from defectnas.model.pairs import pair_logits
    from defectnas.search.child import latency_inputs, served_latency_ms
    from defectnas.training.significance import average_precision_fast, paired_bootstrap

    torch.set_num_threads(args.threads)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    parts = query_split(args)
    test = parts["test"]
    labels = test["label"].to_numpy()
    teachers = [Path(m) for m in args.model] + [work / f"teacher-{s}" for s in args.train_seeds.split(",") if s]

    rows = []
    for teacher_dir in teachers:
        if teacher_dir.name.startswith("teacher-") and not (teacher_dir / "config.json").exists():  # trained here, just before its student
            seed = int(teacher_dir.name.split("-")[1])
            print(f"training train's default model, seed {seed}", flush=True)
            DefectClassifier(seed=seed, num_threads=args.threads).fit(parts["train"], parts["valid"]).save(teacher_dir)
        teacher = DefectClassifier.load(teacher_dir)
        seed = teacher.train_config_.seed
        tag = run_tag(teacher_dir, args)
        student_dir, row_path = work / f"student-{tag}", work / f"{tag}.json"
        if row_path.exists():
            rows.append(json.loads(row_path.read_text()))
            continue
        started = time.perf_counter()
        student = teacher.distill_query(parts["train"], parts["valid"], layers=args.layers, epochs=args.epochs,
                                        text_windows=args.text_windows, init=args.init, lr=args.lr, logit_weight=args.logit_weight,
                                        seed=seed, checkpoint_dir=student_dir, resume=True,
                                        quiet=True, log=lambda m: print(m, flush=True))
        seconds = time.perf_counter() - started
        student.save(student_dir)
        enc = teacher._encode(test[["query", "title"]], labels=False)
        logits = {"teacher": pair_logits(teacher.model_, enc.query, enc.title), "student": pair_logits(student.model_, enc.query, enc.title)}
        queries, titles = latency_inputs(parts["valid"])
        latency = {"teacher": [], "student": []}
        for _ in range(args.rounds):  # interleaved: machine drift hits both alike
            latency["teacher"].append(round(served_latency_ms(teacher, queries, titles, 60), 3))
            latency["student"].append(round(served_latency_ms(student, queries, titles, 60), 3))
        np.save(work / f"{tag}.npy", np.stack([logits["teacher"], logits["student"]]))
        row = {"teacher": str(teacher_dir), "seed": seed, "student": str(student_dir),
               "test_ap_teacher": average_precision_fast(labels, logits["teacher"]),
               "test_ap_student": average_precision_fast(labels, logits["student"]),
               "valid_ap_teacher": teacher.valid_ap_, "valid_ap_student": student.valid_ap_,
               "valid_ap_per_epoch": [r["valid_ap"] for r in student.history_[1:]], "distill_seconds": round(seconds, 1),
               "latency_ms": latency, "speedup": round(float(np.median(latency["teacher"]) / np.median(latency["student"])), 2),
               "load_average": [round(x, 2) for x in os.getloadavg()]}
        row["ap_change"] = row["test_ap_student"] - row["test_ap_teacher"]
        row_path.write_text(json.dumps(row) + "\n")
        rows.append(row)
        print(json.dumps(row), flush=True)

    stacked = [np.load(work / f"{run_tag(Path(r['teacher']), args)}.npy") for r in rows]
    sig = lambda x: 1 / (1 + np.exp(-x))  # noqa: E731  (AP is rank-based: the raw scores' order)
    paired = paired_bootstrap(labels, test["query"].to_numpy(), np.stack([sig(s[1]) for s in stacked]), np.stack([sig(s[0]) for s in stacked]),
                              metric=average_precision_fast, seed=0)
    summary = {"teachers": len(rows), "test_ap_teacher_mean": float(np.mean([r["test_ap_teacher"] for r in rows])),
               "test_ap_student_mean": float(np.mean([r["test_ap_student"] for r in rows])),
               "paired_ap_change": paired, "speedup_median": float(np.median([r["speedup"] for r in rows])),
               "goal_2x_at_0.005": bool(np.median([r["speedup"] for r in rows]) >= 2 and paired["diff"] >= -0.005),
               "goal_2x_at_0.005_whole_interval": bool(np.median([r["speedup"] for r in rows]) >= 2 and paired["ci_low"] >= -0.005)}
    print(f"\n| teacher seed | test AP teacher | test AP student (K={args.layers}) | ΔAP | served ms teacher → student | speed-up |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['seed']} | {r['test_ap_teacher']:.4f} | {r['test_ap_student']:.4f} | {r['ap_change']:+.4f} | "
              f"{np.median(r['latency_ms']['teacher']):.2f} → {np.median(r['latency_ms']['student']):.2f} | {r['speedup']:.2f}× |")
    print(f"paired ΔAP over {len(rows)} seeds: {paired['diff']:+.4f} [{paired['ci_low']:+.4f}, {paired['ci_high']:+.4f}] "
          f"({paired['queries']} test queries); speed-up median {summary['speedup_median']:.2f}×")
    return {"data": args.data, "split_seed": args.split_seed, "layers": args.layers, "epochs": args.epochs, "lr": args.lr,
            "text_windows": args.text_windows, "init": args.init, "logit_weight": args.logit_weight, "threads": args.threads,
            "rows": rows, "summary": summary}


def run_tag(teacher_dir: Path, args: argparse.Namespace) -> str:
    """The name of one teacher's distillation under ``--work`` (its student, row and logits)."""
    return f"{teacher_dir.name}-L{args.layers}-e{args.epochs}-lr{args.lr:g}-w{args.logit_weight:g}-tw{args.text_windows}-{args.init}"


if __name__ == "__main__":
    raise SystemExit(main())
