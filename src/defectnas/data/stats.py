"""What ``defectnas data PATH`` prints: size, defect rate and text lengths of a pairs table.

Why: before training, a user needs to know whether the data is what they think (how many
queries, how rare defects are) and how long texts run, which decides the tokenizer's maximum
length. Lengths count whitespace tokens of the normalised text, a cheap stand-in for word
pieces that does not need a tokenizer. The integrity lines (decoding fallbacks, invalid rows,
duplicates and conflicts, vocabulary coverage) come from :mod:`~defectnas.data.integrity`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ..errors import DataError
from .integrity import duplicate_report, format_integrity, html_entity_report

PERCENTILES = (50, 90, 95, 99)


def describe(df: pd.DataFrame, integrity: dict[str, Any] | None = None, coverage: dict[str, Any] | None = None) -> dict[str, Any]:
    """Counts and length percentiles of a ``load_pairs`` table, as JSON-ready plain values.

    Keys: ``rows``, ``queries`` (distinct), ``products`` (distinct ``product_id``, else titles),
    ``defects`` and ``defect_rate`` (None without a ``label`` column), ``query_tokens`` and
    ``title_tokens`` (dicts with p50, p90, p95, p99, max), and ``splits`` (rows per split)
    when there is a ``split`` column; ``duplicates`` (repeated and conflicting pairs),
    ``html_entities`` (:func:`~defectnas.data.integrity.html_entity_report`), and
    ``integrity`` (:meth:`PairsRead.integrity`) and ``coverage``
    (:func:`~defectnas.data.integrity.coverage_report`) when given.
    """
    missing = [c for c in ("query", "title") if c not in df.columns]
    if missing:
        raise DataError(f"describe needs columns {', '.join(missing)}; columns present: {', '.join(map(str, df.columns))}")
    out: dict[str, Any] = {
        "rows": int(len(df)),
        "queries": int(df["query"].nunique()),
        "products": int(df["product_id" if "product_id" in df.columns else "title"].nunique()),
        "defects": None,
        "defect_rate": None,
    }
    if "label" in df.columns:
        out["defects"] = int(df["label"].sum())
        out["defect_rate"] = float(df["label"].mean()) if len(df) else 0.0
    out["query_tokens"] = _lengths(df["query"])
    out["title_tokens"] = _lengths(df["title"])
    if "split" in df.columns:
        out["splits"] = {str(k): int(v) for k, v in df["split"].value_counts().sort_index().items()}
    out["duplicates"] = duplicate_report(df)
    out["html_entities"] = html_entity_report(df)
    if integrity is not None:
        out["integrity"] = integrity
    if coverage is not None:
        out["coverage"] = coverage
    return out


def _lengths(texts: pd.Series) -> dict[str, float]:
    counts = np.array([len(str(t).split()) for t in texts], dtype=np.float64)
    if len(counts) == 0:
        return {**{f"p{p}": 0.0 for p in PERCENTILES}, "max": 0.0}
    values = np.percentile(counts, PERCENTILES)
    return {**{f"p{p}": float(v) for p, v in zip(PERCENTILES, values)}, "max": float(counts.max())}


def format_description(d: dict[str, Any]) -> str:
    """:func:`describe`'s dict as a small aligned text table."""
    rate = "n/a" if d.get("defect_rate") is None else f"{d['defect_rate']:.1%}"
    defects = "n/a" if d.get("defects") is None else f"{d['defects']:,}"
    lines = [
        ("rows", f"{d['rows']:,}"),
        ("queries", f"{d['queries']:,}"),
        ("products", f"{d['products']:,}"),
        ("defects", defects),
        ("defect rate", rate),
    ]
    lines += [(f"split {name}", f"{count:,}") for name, count in d.get("splits", {}).items()]
    width = max(len(k) for k, _ in lines)
    value_width = max(len(v) for _, v in lines)
    out = [f"{k:<{width}}  {v:>{value_width}}" for k, v in lines]
    integrity = format_integrity(d)
    if integrity:
        out += [""] + integrity

    keys = [f"p{p}" for p in PERCENTILES] + ["max"]
    header = f"{'tokens':<{width}}" + "".join(f"{k:>7}" for k in keys)
    out += ["", header]
    for label, key in (("query", "query_tokens"), ("title", "title_tokens")):
        out.append(f"{label:<{width}}" + "".join(f"{d[key][k]:>7g}" for k in keys))
    return "\n".join(out)
