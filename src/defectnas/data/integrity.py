"""The integrity report: what ``defectnas data`` (and ``train``) say about a table beyond its size.

Why a module of its own: real files carry repeated judgements, pairs judged both relevant and
defect, rows that had to be decoded by a fallback or left out, and text in scripts a
pre-trained vocabulary barely spells. None of that stops training, and all of it changes
what the numbers mean, so it is counted here once and printed in a few lines.

- Duplicates: rows whose (normalised query, normalised title) pair appeared in an earlier
  row. Conflicts: pairs with rows of both labels. Training keeps every row (a pair judged
  twice counts twice, and a conflicting pair teaches the model its share of defect
  judgements); splits put all rows of a pair on one side.
- Vocabulary coverage: the share of word pieces that are the unknown token, overall and per
  script (the script of a text is that of most of its letters), with one warning line when a
  script that holds at least 0.5% of the texts has 5% or more unknown pieces, or 2% overall.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from typing import Any, Sequence

import numpy as np
import pandas as pd

from ._common import counted

WARN_UNKNOWN_SHARE = 0.05  # a script with this share of unknown pieces is covered poorly
WARN_UNKNOWN_OVERALL = 0.02  # ... or the whole table
MIN_SCRIPT_SHARE = 0.005  # scripts with fewer texts are not warned about
_SCRIPT_NAMES = {"HIRAGANA": "kana", "KATAKANA": "kana", "CJK": "cjk", "HANGUL": "hangul", "LATIN": "latin",
                 "CYRILLIC": "cyrillic", "GREEK": "greek", "ARABIC": "arabic", "HEBREW": "hebrew", "DEVANAGARI": "devanagari",
                 "THAI": "thai"}


def duplicate_report(df: pd.DataFrame) -> dict[str, Any]:
    """Repeated and conflicting (query, title) pairs of a ``load_pairs`` table.

    ``duplicate_rows``: rows repeating an earlier row's pair; ``repeated_pairs``: distinct pairs
    seen more than once; ``conflicting_pairs``: pairs with both labels (None without labels) and
    ``conflicting_rows`` their rows; shares are of all rows.
    """
    keys = df["query"].astype(str) + "\x00" + df["title"].astype(str)
    counts = keys.value_counts()
    rows = len(df)
    out: dict[str, Any] = {
        "duplicate_rows": int(rows - len(counts)),
        "repeated_pairs": int((counts > 1).sum()),
        "duplicate_share": float((rows - len(counts)) / rows) if rows else 0.0,
        "conflicting_pairs": None,
        "conflicting_rows": None,
        "conflict_share": None,
    }
    if "label" in df.columns:
        both = df.groupby(keys.to_numpy())["label"].nunique()
        conflicting = set(both.index[both > 1])
        conflicting_rows = int(keys.isin(conflicting).sum())
        out.update(conflicting_pairs=len(conflicting), conflicting_rows=conflicting_rows,
                   conflict_share=float(conflicting_rows / rows) if rows else 0.0)
    return out


HTML_ENTITY = re.compile(r"&(?:#[0-9]{1,7}|#[xX][0-9a-fA-F]{1,6}|[a-zA-Z][a-zA-Z0-9]{1,31});")  # &amp; &#39; &#x2122;


def html_entity_report(df: pd.DataFrame) -> dict[str, Any]:
    """Distinct queries and titles that hold HTML character references (``&amp;``, ``&#39;``):
    text scraped from web pages often keeps them, and the tokenizer reads ``&amp;`` as three
    pieces (``&``, ``amp``, ``;``) where the shopper saw one ``&``. Counted, not changed: the
    texts are the model's inputs as given (decode them before training and serving alike).

    Keys: ``texts`` (distinct texts with one), ``share`` (of distinct texts), ``examples`` (up to
    3 entities as found), ``by_column`` (distinct texts with one per column)."""
    by_column, examples, total, found = {}, {}, 0, 0
    for column in ("query", "title"):
        texts = pd.unique(df[column].dropna().astype(str)) if column in df.columns else []
        hits = [t for t in texts if "&" in t and HTML_ENTITY.search(t)]
        by_column[column] = len(hits)
        total, found = total + len(texts), found + len(hits)
        for t in hits[:50]:
            for m in HTML_ENTITY.findall(t):
                examples.setdefault(m, None)
    return {"texts": found, "share": found / total if total else 0.0, "examples": list(examples)[:3], "by_column": by_column}


def script_of(text: str) -> str:
    """The script of most of ``text``'s letters: latin, cjk, kana, hangul, cyrillic, … or other ("none": no letters)."""
    if text.isascii():
        return "latin" if any(c.isalpha() for c in text) else "none"
    votes: Counter[str] = Counter()
    for c in text:
        if c.isalpha() or unicodedata.category(c).startswith("M"):
            name = unicodedata.name(c, "")
            votes[_SCRIPT_NAMES.get(name.split(" ")[0].split("-")[0], "other")] += 1
    if not votes:
        return "none"
    if votes.get("kana"):  # Japanese mixes kana with ideographs: any kana makes it Japanese
        return "kana"
    return votes.most_common(1)[0][0]


def coverage_report(tokenizer, texts: Sequence[str], name: str = "vocabulary") -> dict[str, Any]:
    """Unknown word pieces of ``texts`` under ``tokenizer`` (a :class:`TextTokenizer`), overall and by script."""
    texts = list(texts)
    pieces, unknown = tokenizer.unknown_counts(texts)
    scripts = np.array([script_of(t) for t in texts], dtype=object)
    by_script = {}
    for script in sorted(set(scripts.tolist())):
        mask = scripts == script
        n_pieces = int(pieces[mask].sum())
        by_script[script] = {"texts": int(mask.sum()), "text_share": float(mask.mean()),
                             "unknown_share": float(unknown[mask].sum() / n_pieces) if n_pieces else 0.0}
    total = int(pieces.sum())
    return {
        "vocabulary": name,
        "pieces": total,
        "unknown_pieces": int(unknown.sum()),
        "unknown_share": float(unknown.sum() / total) if total else 0.0,
        "texts_with_unknown": int((unknown > 0).sum()),
        "texts": len(texts),
        "by_script": by_script,
    }


def coverage_warning(report: dict[str, Any]) -> str | None:
    """One warning line when the vocabulary covers a script (or the table) poorly, else None."""
    poor = [(s, v) for s, v in report["by_script"].items()
            if s != "none" and v["text_share"] >= MIN_SCRIPT_SHARE and v["unknown_share"] >= WARN_UNKNOWN_SHARE]
    if not poor and report["unknown_share"] < WARN_UNKNOWN_OVERALL:
        return None
    parts = ", ".join(f"{s} ({v['text_share']:.1%} of texts): {v['unknown_share']:.1%} unknown" for s, v in poor)
    return (f"the {report['vocabulary']} covers this text poorly: {report['unknown_share']:.1%} of word pieces are unknown"
            + (f"; {parts}" if parts else "")
            + " — a multilingual checkpoint (--pretrained-model DIR) or --embedding-init trained may fit better")


def format_integrity(d: dict[str, Any]) -> list[str]:
    """The report's lines for ``defectnas data`` (keys of describe(): integrity, duplicates, coverage)."""
    lines = []
    read = d.get("integrity")
    if read:
        rows = read.get("encoding_fallback_rows") or []
        listed = ", ".join(map(str, rows[:10])) + (" …" if len(rows) > 10 else "")
        if read.get("encoding_whole_file"):
            where = f"; non-ASCII bytes in {counted(len(rows), 'row')}: {listed}" if rows else ""
            lines.append(f"encoding         whole file decoded as {read['encoding']} (not UTF-8){where}")
        elif rows:
            lines.append(f"encoding         {read['encoding']}; {counted(len(rows), 'row')} with bytes decoded as Windows-1252: {listed}")
        else:
            lines.append(f"encoding         {read['encoding'] or 'Parquet (UTF-8 by its format)'}, no fallback")
        if read["invalid_rows"]:
            reasons = ", ".join(f"{k} {v}" for k, v in read["invalid_reasons"].items())
            lines.append(f"invalid rows     {read['invalid_rows']:,} of {read['rows_read']:,} left out ({reasons}): "
                         + ", ".join(read["invalid_first_rows"]) + (" …" if read["invalid_rows"] > len(read["invalid_first_rows"]) else ""))
        else:
            lines.append(f"invalid rows     0 of {read['rows_read']:,}")
    dup = d.get("duplicates")
    if dup:
        lines.append(f"duplicates       {counted(dup['duplicate_rows'], 'row')} {'repeats' if dup['duplicate_rows'] == 1 else 'repeat'} "
                     f"a pair ({dup['duplicate_share']:.1%} of rows; {counted(dup['repeated_pairs'], 'pair')} seen more than once)")
        if dup["conflicting_pairs"] is not None:
            lines.append(f"conflicts        {counted(dup['conflicting_pairs'], 'pair')} labelled both relevant and defect "
                         f"({counted(dup['conflicting_rows'], 'row')}, {dup['conflict_share']:.1%} of rows)")
    html = d.get("html_entities")
    if html and html["texts"]:
        lines.append(f"html entities    {counted(html['texts'], 'distinct text')} ({html['share']:.1%}; "
                     f"{counted(html['by_column']['query'], 'query', 'queries')}, {counted(html['by_column']['title'], 'title')}) hold HTML character references "
                     f"such as {', '.join(html['examples'])}: kept as written (the tokenizer reads '&amp;' as '&', 'amp', ';')")
    cov = d.get("coverage")
    if cov:
        scripts = "; ".join(f"{s} {v['text_share']:.1%} of texts, {v['unknown_share']:.1%} unknown"
                            for s, v in sorted(cov["by_script"].items(), key=lambda kv: -kv[1]["texts"]) if s != "none")
        lines.append(f"vocabulary       {cov['vocabulary']}: {cov['unknown_share']:.2%} of word pieces unknown "
                     f"({cov['texts_with_unknown']:,} of {cov['texts']:,} distinct texts have one)" + (f"; {scripts}" if scripts else ""))
    return lines
