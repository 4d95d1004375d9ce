"""What ``defectnas data PATH`` prints: size, defect rate and text lengths of a pairs table.

Why: before training, a user needs to know whether the data is what they think (how many
queries, how rare defects are) and how long texts run, which decides the tokenizer's maximum
length. Lengths count words (whitespace tokens of the normalised text) and, given the model's
tokenizer, word pieces — what the token caps (``query_max_len``, ``title_max_len``) count — with
the share of texts each cap cuts. The integrity lines (decoding fallbacks, invalid rows,
duplicates and conflicts, vocabulary coverage) come from :mod:`~defectnas.data.integrity`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ..errors import DataError
from .integrity import duplicate_report, format_integrity, html_entity_report

PERCENTILES = (50, 90, 95, 99)


def describe(df: pd.DataFrame, integrity: dict[str, Any] | None = None, coverage: dict[str, Any] | None = None,
             tokenizer=None, caps: tuple[int, int] | None = None) -> dict[str, Any]:
    """Counts and length percentiles of a ``load_pairs`` table, as JSON-ready plain values.

    Keys: ``rows``, ``queries`` (distinct), ``products`` (distinct ``product_id``, else titles),
    ``defects`` and ``defect_rate`` (None without a ``label`` column), ``query_words`` and
    ``title_words`` (dicts with p50, p90, p95, p99, max, over rows); with a ``tokenizer`` (a
    :class:`~defectnas.data.tokenizer.TextTokenizer`) ``query_pieces`` and ``title_pieces``
    too, the same in word pieces plus, with ``caps`` (query, title), ``cap`` and ``over_cap``
    (share of rows longer than the cap, i.e. truncated); ``splits`` (rows per split)
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
    out["query_words"] = _lengths(df["query"])
    out["title_words"] = _lengths(df["title"])
    if tokenizer is not None:
        for i, column in enumerate(("query", "title")):
            distinct = pd.unique(df[column].astype(str))
            pieces, _ = tokenizer.unknown_counts(distinct.tolist())
            per_row = pd.Series(pieces, index=distinct).reindex(df[column].astype(str)).to_numpy(dtype=np.float64)
            out[f"{column}_pieces"] = _percentiles(per_row)
            if caps is not None:
                out[f"{column}_pieces"].update(cap=int(caps[i]), over_cap=float((per_row > caps[i]).mean()) if len(per_row) else 0.0)
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
    return _percentiles(np.array([len(str(t).split()) for t in texts], dtype=np.float64))


def _percentiles(counts: np.ndarray) -> dict[str, float]:
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
    rows = [(f"{c} words", d[f"{c}_words"]) for c in ("query", "title")]
    rows += [(f"{c} word pieces", d[f"{c}_pieces"]) for c in ("query", "title") if f"{c}_pieces" in d]
    label_width = max(width, *(len(label) for label, _ in rows))
    header = f"{'lengths':<{label_width}}" + "".join(f"{k:>7}" for k in keys)
    out += ["", header]
    for label, lengths in rows:
        cut = f"   {lengths['over_cap']:.1%} over the cap of {lengths['cap']}" if "cap" in lengths else ""
        out.append(f"{label:<{label_width}}" + "".join(f"{lengths[k]:>7g}" for k in keys) + cut)
    return "\n".join(out)
