"""Where a distilled query tower loses its AP: swap one part of its query encoding for the teacher's.

Why: a student made by ``defectnas distill-query`` loses ~0.017 test AP against its teacher
(``query_distillation.py``), whatever its layers, epochs, learning rate or logit term. A query
encoding has three parts that the scoring head reads — the token states (matching layer), the
tower's own pooled vector (first d_model values of the pooled vector) and the pre-trained
sentence vector (the rest). Scoring the held-out pairs with the student's encoding but one part
taken from the teacher says which part carries the loss: what a better distillation must fix.

    python benchmarks/query_distillation_diagnosis.py --teacher TEACHER_DIR --student STUDENT_DIR [--teacher T2 --student S2 ...]

Same split as ``query_distillation.py`` (``--split-seed``, valid 10%, test 20%); AP of the raw
logits, no training, deterministic. Prints a table and writes JSON (``--json``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from query_distillation import DEFAULT_DATA, query_split, write_result  # the same data, split and JSON as the distillation benchmark

HERE = Path(__file__).resolve().parent
SWAPS = ("student", "+ teacher's sentence vector", "+ teacher's pooled vector", "+ teacher's token states", "teacher", "teacher + student's sentence vector")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--teacher", action="append", required=True, help="a model distilled from (repeatable)")
    p.add_argument("--student", action="append", required=True, help="the model distill-query made from the --teacher of the same place")
    p.add_argument("--data", default=str(DEFAULT_DATA))
    p.add_argument("--split-seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", default=str(HERE / "results" / "query_distillation_diagnosis.json"))
    args = p.parse_args(argv)
    if len(args.teacher) != len(args.student):
        p.error("give one --student per --teacher")
    write_result(args.json, run(args))
    return 0


def run(args: argparse.Namespace) -> dict:
    import torch

    from defectnas import DefectClassifier
    from defectnas.model.classifier import Encoded
    from defectnas.model.pairs import distinct_rows, encode_rows, take_rows
    from defectnas.training.significance import average_precision_fast

    torch.set_num_threads(args.threads)
    parts = query_split(args)

    def mixed(tokens: Encoded, pooled: Encoded, sentence: Encoded) -> Encoded:
        d = teacher.model_config_.d_model  # pooled vector = [the tower's own (d), the pre-trained sentence vector]
        return Encoded(tokens.tokens, torch.cat([pooled.vector[:, :d], sentence.vector[:, d:]], dim=1), tokens.mask)

    rows = []
    for teacher_dir, student_dir in zip(args.teacher, args.student):
        teacher, student = DefectClassifier.load(teacher_dir), DefectClassifier.load(student_dir)
        row = {"teacher": teacher_dir, "student": student_dir}
        for split in ("valid", "test"):
            pairs = teacher._encode(parts[split])
            q_codes, q_first = distinct_rows(pairs.query)
            t_codes, t_first = distinct_rows(pairs.title)
            with torch.no_grad():
                titles = encode_rows(teacher.model_.encode_title, pairs.title[t_first], 512, "cpu")
                t, s = (encode_rows(m.model_.encode_query, pairs.query[q_first], 512, "cpu") for m in (teacher, student))
                encodings = dict(zip(SWAPS, (s, mixed(s, s, t), mixed(s, t, s), mixed(t, s, s), t, mixed(t, t, s))))
                for name, q in encodings.items():
                    logits = np.concatenate([
                        teacher.model_.score(take_rows(q, torch.from_numpy(q_codes[i : i + 2048])),
                                             take_rows(titles, torch.from_numpy(t_codes[i : i + 2048]))).numpy()
                        for i in range(0, len(q_codes), 2048)])
                    row[f"{split}_ap {name}"] = average_precision_fast(pairs.label, logits)
        rows.append(row)
        print(f"\n{student_dir}\n| query encoding | valid AP | test AP |\n|---|---:|---:|")
        for name in SWAPS:
            print(f"| {name} | {row[f'valid_ap {name}']:.4f} | {row[f'test_ap {name}']:.4f} |")
    means = {k: float(np.mean([r[k] for r in rows])) for k in rows[0] if k.startswith(("valid_ap ", "test_ap "))}
    return {"data": args.data, "split_seed": args.split_seed, "rows": rows, "means": means}


if __name__ == "__main__":
    raise SystemExit(main())
