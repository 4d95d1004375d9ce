"""``trials.jsonl``: the search's durable record, one line per finished child.

Why a log and not just the checkpoint: a child takes seconds to minutes, a controller update
milliseconds. Each finished child is appended (and fsynced) the moment it finishes, before the
controller learns from it, so a kill loses at most the children still running. On ``--resume``
the log is the source of truth: a trial that has a line is never run again, and the trials of
a batch that finished without its controller update being checkpointed are replayed from their
lines into that update. The log also serves as the architecture cache: a key seen before is
not retrained (the repeat is still a trial, written with ``"cached": true``).

Line fields: ``trial`` (0, 1, 2, … in the order sampled), ``step`` (controller step the trial
belongs to), ``architecture``, ``actions`` (the strategy's option indices, -1 where inactive),
``reward``, ``metric`` (the reward metric's mean over the child seeds) and ``spread`` (its
standard deviation over them), ``ap`` / ``f1`` (means) and ``ap_seeds`` / ``f1_seeds``,
``latency_ms`` (one served request: 1 query × 100 cached products), ``over_budget``, ``params``,
``seconds`` (0 for a cached repeat), ``frozen_s`` and ``frozen_texts`` (of those seconds, the
one-off pass of texts its process had not memoised through the frozen pre-trained layers, and how
many texts: a child's steady cost is ``seconds - frozen_s``, which the budget's estimates use, a
resumed search's too), ``cached``, ``cached_from`` (the trial that was trained), ``finished_at``
(Unix time the line was written) and ``load_1m``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from ..storage import append_line, atomic_write_text
from .space import arch_key

FIELDS = ("trial", "step", "architecture", "actions", "reward", "metric", "spread", "ap", "f1", "ap_seeds", "f1_seeds",
          "latency_ms", "over_budget", "params", "seconds", "frozen_s", "frozen_texts", "cached", "cached_from", "finished_at", "load_1m")
RESULT_FIELDS = ("reward", "metric", "spread", "ap", "f1", "ap_seeds", "f1_seeds", "latency_ms", "over_budget", "params")


class TrialLog:
    """Finished trials by number, with a cache of trained architectures by key."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.by_trial: dict[int, dict[str, Any]] = {}
        self.cache: dict[str, dict[str, Any]] = {}  # arch key → the trained (non-cached) record
        if self.path.exists():
            self._read()

    def _read(self) -> None:
        for record in read_jsonl(self.path, require="trial"):
            self._add(record)

    def _add(self, record: dict[str, Any]) -> None:
        t = int(record["trial"])
        if t in self.by_trial:  # cannot happen through append(); keep the first if a file was edited
            return
        self.by_trial[t] = record
        if not record.get("cached"):
            self.cache.setdefault(arch_key(record["architecture"]), record)

    def append(self, record: dict[str, Any]) -> None:
        """Write one finished trial to disk (fsync) and index it."""
        if int(record["trial"]) in self.by_trial:
            raise ValueError(f"trial {record['trial']} is already logged")
        append_line(self.path, json.dumps({k: record[k] for k in FIELDS if k in record}))
        self._add(record)

    def cached_copy(self, trial: int, step: int, architecture: Any, actions: list[int], source: dict[str, Any]) -> dict[str, Any]:
        """The record of a repeat: the trained trial's results, marked cached (its own sampled actions)."""
        return {"trial": trial, "step": step, "architecture": architecture, "actions": actions,
                **{k: source[k] for k in RESULT_FIELDS if k in source},
                "seconds": 0.0, "cached": True, "cached_from": source["trial"], "finished_at": round(time.time(), 3)}

    def records(self) -> list[dict[str, Any]]:
        """All finished trials in trial order."""
        return [self.by_trial[t] for t in sorted(self.by_trial)]

    def top_k(self, k: int) -> list[dict[str, Any]]:
        """The k best distinct architectures by reward (ties: the earlier trial)."""
        trained = sorted(self.cache.values(), key=lambda r: (-r["reward"], r["trial"]))
        return trained[:k]

    def __len__(self) -> int:
        return len(self.by_trial)


def read_jsonl(path: str | Path, require: str = "") -> list[dict[str, Any]]:
    """The records of a JSON-lines log; a torn line (a kill mid-write) is dropped from the file too.

    Rewriting the file without it matters: the next append would otherwise be glued onto the
    torn line and be lost as well.
    """
    path = Path(path)
    if not path.exists():
        return []
    text = path.read_text(encoding="utf-8")
    good, records, torn = [], [], False
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            if require:
                int(record[require])
        except (ValueError, KeyError, TypeError):
            torn = True
            continue
        good.append(line)
        records.append(record)
    if torn or (text and not text.endswith("\n")):
        atomic_write_text(path, "".join(line + "\n" for line in good))
    return records
