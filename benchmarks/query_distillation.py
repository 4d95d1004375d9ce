"""Experiment (issue 19's product goal): a shallower query tower distilled from a trained model's.

Why: at batch 1 the query tower is bound by reading its weights, so a request's cost falls with
the tower's pre-trained layers (6 in ``train``'s default: ~9.5 of ~12 ms per request in
PyTorch). A K-layer query tower that reproduces the 6-layer one's encodings would serve ~2×
faster for K = 2 while the title tower, the head — and so every product cache — stay as they
are. The search's own children with fewer query layers learn from the labels alone (and lost
0.02–0.05 AP); this asks what distillation keeps.

What it does: the student is the teacher (``--model``) with ``query_backbone_layers = K``, its K
layers fine-tuned as the query tower's own copies, started from MiniLM's first K layers. Its
query tower alone is trained (AdamW, ``--lr``, ``--epochs``) to match the teacher's query
encodings — token states (masked MSE) and pooled vector (MSE) — on the training split's queries
plus 2–5-word prefixes of its titles (query-like texts; the validation and test queries are
never seen). Then both are scored on the test split (query-grouped, ``--seed``, as ``train``
splits it): average precision of the raw scores, and served latency (the search's timer: median
of a ``serve`` request of 1 query × 100 cached products, 1 thread) of both, interleaved.

    python benchmarks/query_distillation.py --model MODEL_DIR --layers 2 --epochs 8 --lr 1e-4

Prints one JSON line and writes it to ``--json``. Not a product feature: an experiment, reported
in the README beside the product goal.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = HERE.parent.parent / "shared" / "data" / "homedepot_sample.parquet"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="the teacher: a trained model directory (train's default)")
    p.add_argument("--data", default=str(DEFAULT_DATA), help="the pairs table the teacher was trained on")
    p.add_argument("--layers", type=int, default=2, help="pre-trained layers of the student's query tower")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--seed", type=int, default=0, help="the split's seed (as train --seed)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", default=str(HERE / "results" / "query_distillation.json"))
    args = p.parse_args(argv)
    result = run(args)
    line = json.dumps(result)
    print(line)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(line + "\n")
    return 0


def run(args: argparse.Namespace) -> dict:
    from sklearn.metrics import average_precision_score

    from defectnas import DefectClassifier
    from defectnas.data import load_pairs, normalize_text, split_by_query
    from defectnas.data.tokenizer import trim_padding
    from defectnas.model.classifier import DefectNet
    from defectnas.model.pairs import pair_logits
    from defectnas.search.child import latency_inputs, served_latency_ms

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    teacher = DefectClassifier.load(args.model)
    tnet = teacher.model_.eval()
    cfg = copy.deepcopy(teacher.model_config_)
    cfg.query_backbone_layers = cfg.query_backbone_trainable = args.layers
    snet = DefectNet(cfg)
    snet.load_state_dict(tnet.state_dict(), strict=False)  # all but the student's own query layers
    for i, layer in enumerate(snet.query_encoder.embed.top):  # start from the pre-trained model's first K layers
        layer.load_state_dict(tnet.backbone.encoder.layer[i].state_dict())
    student = copy.copy(teacher)
    student.model_, student.model_config_ = snet, cfg

    parts = split_by_query(load_pairs(args.data), valid_frac=0.1, test_frac=0.2, seed=args.seed)
    texts = list(dict.fromkeys(parts["train"]["query"].map(normalize_text)))
    for title in parts["train"]["title"].map(normalize_text).drop_duplicates().tolist():
        texts.append(" ".join(title.split()[: int(rng.integers(2, 6))]))
    texts = list(dict.fromkeys(texts))
    ids = teacher.tokenizer_.encode(texts, cfg.query_max_len)

    for q in snet.parameters():
        q.requires_grad_(False)
    params = [q for n, q in snet.query_encoder.named_parameters() if not n.startswith("embed.backbone")]
    for q in params:
        q.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=args.lr)
    losses = []
    started = time.perf_counter()
    for _ in range(args.epochs):
        snet.train()
        order, total = rng.permutation(len(ids)), 0.0
        for b in range(0, len(ids), 128):
            x = torch.from_numpy(trim_padding(ids[order[b : b + 128]]))
            with torch.no_grad():
                target = tnet.encode_query(x)
            out = snet.encode_query(x)
            m = target.mask.unsqueeze(-1).float()
            loss = ((out.tokens - target.tokens) ** 2 * m).sum() / m.sum() / out.tokens.shape[-1] + F.mse_loss(out.vector, target.vector)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(x)
        losses.append(round(total / len(ids), 4))
    snet.eval()

    test = parts["test"]
    enc = teacher._encode(test[["query", "title"]], labels=False)
    labels = test["label"].to_numpy()
    ap_teacher = float(average_precision_score(labels, pair_logits(tnet, enc.query, enc.title)))
    ap_student = float(average_precision_score(labels, pair_logits(snet, enc.query, enc.title)))
    queries, titles = latency_inputs(parts["valid"])
    latency = {"teacher": [], "student": []}
    for _ in range(3):  # interleaved: machine drift hits both alike
        latency["teacher"].append(served_latency_ms(teacher, queries, titles, 60))
        latency["student"].append(served_latency_ms(student, queries, titles, 60))
    med = {k: float(np.median(v)) for k, v in latency.items()}
    return {"teacher": str(args.model), "layers": args.layers, "epochs": args.epochs, "lr": args.lr, "texts": len(texts),
            "distill_losses": losses, "train_seconds": round(time.perf_counter() - started, 1), "test_pairs": int(len(test)),
            "test_ap_teacher": ap_teacher, "test_ap_student": ap_student, "ap_change": ap_student - ap_teacher,
            "latency_ms": {k: [round(x, 2) for x in v] for k, v in latency.items()},
            "speedup": round(med["teacher"] / med["student"], 2), "load_average": [round(x, 2) for x in os.getloadavg()]}


if __name__ == "__main__":
    raise SystemExit(main())
