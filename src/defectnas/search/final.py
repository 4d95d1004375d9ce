"""After the search: retrain the top-k architectures from scratch, keep the best as ``best/``.

Why retrain: a child is trained on a small budget (an epoch on a few thousand pairs), which
ranks architectures but does not finish them. The k distinct architectures with the highest
search reward are trained again from scratch with the full budget (all training pairs, the
model's usual epochs with early stopping), on the same splits. The winner is chosen by the same
objective as the search (validation F1, times the latency term when ``latency_weight`` > 0),
never by test scores, and saved as an ordinary model directory — ``best/`` is what
``evaluate``, ``predict`` and ``serve`` take — with ``metrics.json`` on the test split.

Each finished retrain is appended to ``retrain.jsonl``, so a resumed search retrains only what
is missing. A retrained model is written to ``retrain/trial-N/`` by the worker; the driver moves
it into ``best/`` (old one aside, new one in, old one removed) when it is the best so far, or
deletes it. ``top_k.json`` lists every top-k architecture with its search and retrain results.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Callable

from ..storage import append_line, atomic_write_json
from .child import reward
from .config import SearchConfig
from .space import arch_key, describe
from .trials import TrialLog, read_jsonl

RETRAIN_LOG = "retrain.jsonl"
TOP_K_FILE = "top_k.json"
BEST_DIR = "best"


def retrain_top_k(cfg: SearchConfig, out: Path, trials: TrialLog, executor, options: dict[str, Any], quiet: bool,
                  say: Callable[[str], None]) -> tuple[list[dict[str, Any]], Path | None]:
    """Retrain what is missing of the top-k, install the best as ``best/``; returns (top_k entries, best dir)."""
    from tqdm.auto import tqdm

    top = trials.top_k(cfg.top_k)
    if not top:
        return [], None
    best_dir = out / BEST_DIR
    _recover_swap(best_dir)
    shutil.rmtree(out / "retrain", ignore_errors=True)  # half-written models of a killed run
    done = {arch_key(e["architecture"]): e for e in read_jsonl(out / RETRAIN_LOG)}
    top_keys = {arch_key(r["architecture"]) for r in top}
    best = _best([e for k, e in done.items() if k in top_keys])

    todo = [(rank, rec) for rank, rec in enumerate(top, 1) if arch_key(rec["architecture"]) not in done]
    jobs = [_job(cfg, out, rec, options) for _, rec in todo]
    bar = tqdm(total=len(top), initial=len(top) - len(todo), desc=f"retrain top {len(top)}", unit="model", disable=quiet)
    try:
        for i, res in executor.map_unordered(jobs):
            rank, rec = todo[i]
            entry = _entry(cfg, rank, rec, res)
            if best is None or _better(entry, best):
                _install(Path(jobs[i]["save_dir"]), best_dir)
                best = entry
            else:
                shutil.rmtree(jobs[i]["save_dir"], ignore_errors=True)
            append_line(out / RETRAIN_LOG, json.dumps(entry))
            done[arch_key(rec["architecture"])] = entry
            bar.update(1)
            with tqdm.external_write_mode():
                say(f"retrained #{rank} (trial {rec['trial']}): valid F1 {entry['valid_f1']:.4f}, "
                    f"{entry['latency_ms']:.2f} ms/100 in {entry['seconds']:.0f}s: {describe(rec['architecture'])}")
    finally:
        bar.close()

    if _saved_architecture(best_dir) != arch_key(best["architecture"]):
        # best/ holds another model (the top-k changed when a finished search was extended): rebuild it
        list(executor.map_unordered([_job(cfg, out, {"architecture": best["architecture"], "trial": best["trial"]}, options)]))
        _install(out / "retrain" / f"trial-{best['trial']}", best_dir)
    shutil.rmtree(out / "retrain", ignore_errors=True)

    entries = [{**done[arch_key(r["architecture"])], "rank": rank, "best": arch_key(r["architecture"]) == arch_key(best["architecture"])}
               for rank, r in enumerate(top, 1)]
    atomic_write_json(out / TOP_K_FILE, entries)
    say(f"best architecture (trial {best['trial']}, valid F1 {best['valid_f1']:.4f}) saved to {best_dir}")
    return entries, best_dir


def _job(cfg: SearchConfig, out: Path, rec: dict[str, Any], options: dict[str, Any]) -> dict[str, Any]:
    tables = {"train": "train", "valid": "valid", "test": "test" if cfg.test_frac > 0 else ""}
    return {"architecture": rec["architecture"], "options": options, "latency_repeats": cfg.latency_repeats,
            "tables": tables, "save_dir": str(out / "retrain" / f"trial-{rec['trial']}")}


def _entry(cfg: SearchConfig, rank: int, rec: dict[str, Any], res: dict[str, Any]) -> dict[str, Any]:
    return {
        "rank": rank,  # by search reward
        "trial": rec["trial"],
        "architecture": rec["architecture"],
        "search_reward": rec["reward"],
        "search_f1": rec["f1"],
        "search_latency_ms": rec["latency_ms"],
        "valid_f1": res["f1"],
        "latency_ms": round(res["latency_ms"], 4),
        "final_reward": reward(res["f1"], res["latency_ms"], cfg.latency_target_ms, cfg.latency_weight),
        "params": res["params"],
        "test": res.get("test"),
        "seconds": round(res["seconds"], 3),
    }


def _better(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return (a["final_reward"], -a["rank"]) > (b["final_reward"], -b["rank"])


def _best(entries: list[dict[str, Any]]) -> dict[str, Any] | None:
    best = None
    for e in entries:
        if best is None or _better(e, best):
            best = e
    return best


def _install(src: Path, dst: Path) -> None:
    """Replace directory ``dst`` by ``src``: old aside, new in, old removed (recoverable if killed)."""
    old = dst.with_name(dst.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if dst.exists():
        os.replace(dst, old)
    os.replace(src, dst)
    shutil.rmtree(old, ignore_errors=True)


def _recover_swap(dst: Path) -> None:
    """A kill between the two renames of :func:`_install` leaves only ``best.old``: put it back."""
    old = dst.with_name(dst.name + ".old")
    if old.exists():
        if dst.exists():
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(old, dst)


def _saved_architecture(model_dir: Path) -> str | None:
    try:
        config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
        return arch_key(config["model"]["title_layers"])
    except (OSError, ValueError, KeyError):
        return None

