"""A fake child: a deterministic function of the architecture and seed instead of training.

Kept free of pytest so that a search run in a subprocess (the kill test) can use it too. Its
metric has a learnable architecture part and a small seed part (so the noise floor, the seed
spread and the paired test have something to measure); its latency grows with the query
tower's depth and the cells' ratios, as the real one does.
"""

from __future__ import annotations

import json
import sys
import time
import zlib
from pathlib import Path

import numpy as np


def fake_f1(architecture) -> float:
    """A smooth, learnable score: GLU mixers and wide ratios help, a little per-layer texture."""
    cells = architecture["title_cells"] if isinstance(architecture, dict) else architecture
    glu = sum(layer["mixer"] == "glu" for layer in cells) / max(1, len(cells))
    wide = sum(layer["ratio"] for layer in cells) / (16 * max(1, len(cells)))
    texture = sum((i + 1) * len(layer["ffn"]) for i, layer in enumerate(cells)) % 7 / 700
    score = 0.3 + 0.2 * glu + 0.05 * wide + texture
    if isinstance(architecture, dict):  # serving space: deeper query towers and matching help a little
        score += 0.01 * architecture["query_layers"] + 0.02 * architecture["matching"]
    return score


def seed_noise(architecture, seed: int) -> float:
    """A deterministic ±0.005 per (architecture, seed)."""
    h = zlib.crc32(json.dumps([architecture, seed], sort_keys=True).encode())
    return (h % 1001) / 1000 * 0.01 - 0.005


def fake_latency(architecture) -> float:
    cells = architecture["title_cells"] if isinstance(architecture, dict) else architecture
    ms = 10.0 + sum(layer["ratio"] for layer in cells) / 4
    if isinstance(architecture, dict):
        ms += 2.0 * architecture["query_layers"] + 3.0 * architecture["matching"]
    return ms


def fake_evaluate_child(job, train=None, valid=None, test=None) -> dict:
    """Stands in for :func:`defectnas.search.child.evaluate_child` (same job in, same fields out)."""
    arch = job["architecture"]
    seeds = job.get("seeds", [0])
    aps = [fake_f1(arch) + seed_noise(arch, s) for s in seeds]
    f1s = [a + 0.1 for a in aps]
    result = {"ap": float(np.mean(aps)), "ap_seeds": aps, "f1": float(np.mean(f1s)), "f1_seeds": f1s,
              "latency_ms": fake_latency(arch), "params": 1000, "seconds": 0.0}
    if test is not None and len(test):
        labels = test["label"].to_numpy()
        probs = []
        for s in seeds:  # better architectures separate the classes more
            rng = np.random.default_rng(zlib.crc32(json.dumps([arch, s], sort_keys=True).encode()))
            probs.append(rng.random(len(labels)) + (fake_f1(arch) - 0.3) * 4 * labels)
        result["test"] = [{"precision": 0.5, "recall": 0.5, "f1": 0.5, "threshold": 0.5, "n": len(labels), "defect_rate": 0.1,
                           "average_precision": a} for a in aps]
        if job.get("probs_path"):
            Path(job["probs_path"]).parent.mkdir(parents=True, exist_ok=True)
            np.save(job["probs_path"], np.stack(probs).astype(np.float32))
    if job.get("save_dir"):  # what the real child leaves: a model directory naming its title layers
        out = Path(job["save_dir"])
        out.mkdir(parents=True, exist_ok=True)
        cells = arch["title_cells"] if isinstance(arch, dict) else arch
        (out / "config.json").write_text(json.dumps({"model": {"title_layers": cells}, "fake_latency_ms": result["latency_ms"]}),
                                         encoding="utf-8")
    return result


def fake_time_models(dirs, valid, repeats) -> dict:
    """Stands in for :func:`defectnas.search.final.time_models`: each saved fake model's latency (its
    config's ``fake_latency_ms``) in three rounds that differ a little, as real rounds do."""
    ms = {k: json.loads((Path(d) / "config.json").read_text(encoding="utf-8"))["fake_latency_ms"] for k, d in dirs.items()}
    return {k: [round(v * f, 4) for f in (1.0, 1.03, 0.98)] for k, v in ms.items()}


def main(argv: list[str]) -> None:
    """``python fakes.py DATA OUT TRIALS STRATEGY [--resume]``: a search whose children are fake and slow-ish."""
    import defectnas.search.executors as executors
    import defectnas.search.final as final
    from defectnas.search.runner import run_search

    def slow_fake(job, train=None, valid=None, test=None):
        time.sleep(0.15)
        return fake_evaluate_child(job, train, valid, test)

    executors.evaluate_child = slow_fake
    final.time_models = fake_time_models
    data, out, trials, strategy = argv[0], argv[1], int(argv[2]), argv[3]
    run_search(kill_test_config(data, trials, strategy), out, resume="--resume" in argv, log=lambda m: print(m, flush=True))


def kill_test_config(data: str, trials: int, strategy: str = "rl"):
    from defectnas.search.config import SearchConfig

    return SearchConfig(data=str(data), trials=trials, top_k=1, pareto_max=2, final_seeds=2, noise_repeats=2, seed=5, distill_query=0,
                        strategy=strategy, population=4, sample_size=2, batch_size=2, options={"d_model": 16})


if __name__ == "__main__":
    main(sys.argv[1:])
