"""The before/after comparison of ``--baseline-log``: change per query, per group and overall.

Why a module of its own: comparing two audits is its own question — which queries got worse,
and is a change more than noise? — with its own pairing. Both logs are scored with the same
model, so a product shown for a query in both logs has the same probability and the same
unknown truth in both: per query the change's variance loses their covariance (see
:func:`defectnas.audit.rates.query_changes`), and the overall and per-group bootstraps draw one
weight per query for both logs. Pairing products needs both logs' rows of a query side by
side; they are read from the two scored.parquet files in hash partitions of queries of at most
``PAIR_ROWS`` rows, so memory stays bounded for any log size. Queries are paired by their
normalised text (``query_key``), so a query whose casing or spacing changed between the logs
is still one query.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from . import rates
from .run import CHANGES, WORST, AuditConfig, LogAudit, _clean

PAIR_ROWS = 2_000_000  # rows per hash partition when pairing two logs' products per query


def compare_logs(new: LogAudit, old: LogAudit, out: Path, cfg: AuditConfig, files: dict[Path, str]) -> dict:
    """changes.csv (into ``files``: path → text, written with the run's other outputs) and the
    ``baseline`` block of summary.json: the change of every rate overall and per group (paired
    bootstrap), per query (paired normal approximation), queries that got worse."""
    shared = shared_variance(new.scored_path, old.scored_path)
    changes = rates.query_changes(new.queries, old.queries, shared)
    files[out / CHANGES] = changes.to_csv(index=False)
    worse = changes[changes["worse"]].sort_values(["change", "traffic"], ascending=[False, False])
    by = {}
    for c in cfg.by:
        if c not in old.groups:
            continue
        rows = []
        values = sorted(set(new.groups[c][c]) | set(old.groups[c][c]))
        for v in values:
            a = new.groups[c][new.groups[c][c] == v].drop(columns=[c])
            b = old.groups[c][old.groups[c][c] == v].drop(columns=[c])
            rows.append({"value": v, **rates.paired_change(a, b, cfg.seed)})
        by[c] = rows
    return {
        "log": str(old.path),
        "overall": rates.paired_change(new.queries, old.queries, cfg.seed),
        "by": by,
        "queries_worse": int(changes["worse"].sum()),
        "queries_better": int(changes["better"].sum()),
        "worse": _clean(worse.head(WORST).to_dict("records")),
        "file": CHANGES,
        "method": "per query: normal approximation of the change, paired on products shown in both logs; overall and per "
                  f"group: Poisson bootstrap over the union of queries, one weight per query for both logs, {rates.BOOTSTRAP} resamples",
    }


def shared_variance(new_scored: Path, old_scored: Path) -> pd.DataFrame:
    """Per query, Σ p(1−p) over products shown for it in both logs (columns _query, shared_variance).

    Read in hash partitions of queries (each pass holds at most ~``PAIR_ROWS`` rows of the two
    logs' query, product and probability columns), so memory stays bounded for any log size."""
    import pyarrow.parquet as pq

    total = pq.ParquetFile(new_scored).metadata.num_rows + pq.ParquetFile(old_scored).metadata.num_rows
    parts = max(1, math.ceil(total / PAIR_ROWS))
    results = []
    for k in range(parts):
        a = _partition(new_scored, k, parts)
        b = _partition(old_scored, k, parts)
        both = a.merge(b[["_query", "product_key"]].drop_duplicates(), on=["_query", "product_key"])
        p = both["defect_probability"].to_numpy()
        both["shared_variance"] = rates.units(p * (1 - p))  # summed in the units (and from the values) the logs' own sums use,
        part = both.groupby("_query", sort=False)["shared_variance"].sum().reset_index()  # so an unchanged page's variance cancels exactly
        part["shared_variance"] = part["shared_variance"].to_numpy(dtype=np.int64) * rates.UNIT
        results.append(part)
    return pd.concat(results, ignore_index=True) if results else pd.DataFrame(columns=["_query", "shared_variance"])


def _partition(scored: Path, k: int, parts: int) -> pd.DataFrame:
    """Rows of partition ``k`` of ``parts`` (by a hash of the query key): _query, product_key, defect_probability."""
    import pyarrow.parquet as pq

    pieces = []
    for batch in pq.ParquetFile(scored).iter_batches(batch_size=200_000, columns=["query_key", "product_key", "defect_probability"]):
        frame = batch.to_pandas().rename(columns={"query_key": "_query"})
        frame = frame[frame["defect_probability"].notna()]
        if parts > 1:
            frame = frame[pd.util.hash_pandas_object(frame["_query"], index=False).to_numpy() % parts == k]
        pieces.append(frame)
    return pd.concat(pieces, ignore_index=True)
