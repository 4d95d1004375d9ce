"""A fake child: a deterministic function of the architecture instead of training.

Kept free of pytest so that a search run in a subprocess (the kill test) can use it too.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path


def fake_f1(architecture: list[dict]) -> float:
    """A smooth, learnable score: GLU mixers and wide ratios help, a little per-layer texture."""
    glu = sum(layer["mixer"] == "glu" for layer in architecture) / len(architecture)
    wide = sum(layer["ratio"] for layer in architecture) / (16 * len(architecture))
    texture = sum((i + 1) * len(layer["ffn"]) for i, layer in enumerate(architecture)) % 7 / 700
    return 0.3 + 0.2 * glu + 0.05 * wide + texture


def fake_evaluate_child(job, train=None, valid=None, test=None) -> dict:
    """Stands in for :func:`defectnas.search.child.evaluate_child` (same job in, same fields out)."""
    arch = job["architecture"]
    result = {"f1": fake_f1(arch), "latency_ms": 10.0 + sum(l["ratio"] for l in arch) / 4, "params": 1000, "seconds": 0.0}
    if job.get("tables", {}).get("test"):
        result["test"] = {"precision": 0.5, "recall": 0.5, "f1": 0.5, "threshold": 0.5, "n": 10, "defect_rate": 0.1}
    if job.get("save_dir"):  # what the real child leaves: a model directory naming its title layers
        out = Path(job["save_dir"])
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps({"model": {"title_layers": arch}}), encoding="utf-8")
    return result


def main(argv: list[str]) -> None:
    """``python fakes.py DATA OUT TRIALS [--resume]``: a search whose children are fake and slow-ish."""
    import defectnas.search.executors as executors
    from defectnas.search.runner import run_search

    def slow_fake(job, train=None, valid=None, test=None):
        time.sleep(0.15)
        return fake_evaluate_child(job, train, valid, test)

    executors.evaluate_child = slow_fake
    data, out, trials = argv[0], argv[1], int(argv[2])
    run_search(kill_test_config(data, trials), out, resume="--resume" in argv)


def kill_test_config(data: str, trials: int):
    from defectnas.search.config import SearchConfig

    return SearchConfig(data=str(data), trials=trials, top_k=0, seed=5, options={"d_model": 16})


if __name__ == "__main__":
    main(sys.argv[1:])
