"""Text normalisation applied to every query and title before anything else sees them.

Why one function: queries are grouped into splits, titles are hashed into product ids and both
are fed to the tokenizer, so "Drill  Bit", "drill bit" and "ｄｒｉｌｌ bit" must become the same
string everywhere. NFKC folds compatibility characters (full-width letters, ligatures,
non-breaking spaces), invisible format and control characters (zero-width spaces, soft
hyphens, byte-order marks: Unicode categories Cf and Cc) are dropped, as the word-piece
tokenizer drops them too, then the text is lower-cased and its whitespace collapsed.
Accents and other combining marks are kept: "año" and "ano", パンダ and ハンダ stay apart.
"""

from __future__ import annotations

import unicodedata
from typing import Any, Sequence

import pandas as pd

from ..errors import DataError
from ._common import counted, is_missing, show


def normalize_text(s: str) -> str:
    """NFKC, invisible characters dropped, lower-case, every whitespace run to one space, stripped."""
    text = unicodedata.normalize("NFKC", str(s))
    if not text.isascii() or not text.isprintable():
        text = "".join(" " if c.isspace() else c for c in text if not _invisible(c))
    return " ".join(text.lower().split())


def _invisible(c: str) -> bool:
    """A format or control character (not whitespace): shows nothing, and the tokenizer drops it."""
    return unicodedata.category(c) in ("Cf", "Cc") and not c.isspace()


def normalize_series(values: pd.Series) -> pd.Series:
    """:func:`normalize_text` over a Series; missing values (None/NaN) stay missing.

    Applies the scalar function to each cell (rather than pandas' ``.str`` methods, whose regex
    engine may treat Unicode whitespace differently), so both are identical by construction.
    """
    out = [None if is_missing(v) else normalize_text(v) for v in values.tolist()]
    return pd.Series(out, index=values.index, dtype=object, name=values.name)


def text_pairs(queries: Sequence[str] | pd.DataFrame, titles: Sequence[str] | None = None,
               what: str = "predict_proba") -> tuple[list[str], list[str]]:
    """Normalised query and title lists from a table (``query``, ``title``) or two sequences.

    Why here: every model's ``predict_proba`` takes either form, and all of them must see the
    same normalised text as training did. ``what`` names the caller in errors
    (:func:`check_pair_arguments`).
    """
    if isinstance(queries, pd.DataFrame):
        missing = {"query", "title"} - set(queries.columns)
        if missing:
            raise DataError(f"{what} needs columns query and title; missing: {', '.join(sorted(missing))}")
        titles, queries = queries["title"].tolist(), queries["query"].tolist()
    check_pair_arguments(queries, titles, what)  # every model's: the baselines' too
    return [_text_or_empty(q) for q in queries], [_text_or_empty(t) for t in titles]


def check_pair_arguments(queries: Any, titles: Any, what: str) -> None:
    """DataError in one line when ``what(queries, titles)`` was not given a table or two sequences
    of texts, one title per query. A bare string is a sequence of characters: ``predict_proba("drill",
    "bits!")`` scored five one-letter pairs, while strings of unequal length gave an unrelated count
    error; titles left out were reported as a count mismatch rather than as missing."""
    if isinstance(queries, pd.DataFrame):
        return
    for name, value in (("queries", queries), ("titles", titles)):
        if isinstance(value, (str, bytes)):
            raise DataError(f"{what}: {name} is a single string ({show(value, 40)}), not a list; pass lists of queries and titles "
                            f"(one pair: {what}([query], [title])) or a DataFrame with query and title columns")
    if titles is None:
        raise DataError(f"{what}: titles missing: pass one title per query, {what}(queries, titles), or a DataFrame with query "
                        "and title columns")
    if len(queries) != len(titles):
        raise DataError(f"{what}: {counted(len(queries), 'query', 'queries')} but {counted(len(titles), 'title')}: pass one title "
                        "per query")


def _text_or_empty(value: object) -> str:
    """:func:`normalize_text`, with a missing value (None, NaN) as "" — which the models' screening
    calls unscorable — where ``str()`` made it the words "none" and "nan", scored as text."""
    return "" if is_missing(value) else normalize_text(value)
