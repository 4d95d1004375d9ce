"""Small helpers shared by the data modules: one-line errors that name the source, row labels.

Why a module of its own: every loader must report problems the same way, as one line that
names the file (or ``<DataFrame>``) and the row or column at fault, and rows must be numbered
the same way everywhere (1-based data rows for files, the caller's index for DataFrames).
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from typing import Any, Iterable

import numpy as np
import pandas as pd

from ..errors import DataError

FRAME_NAME = "<DataFrame>"  # how an in-memory table is named in messages


def one_line(text: str) -> str:
    """``text`` with every run of whitespace (newlines included) collapsed to one space."""
    return " ".join(str(text).split())


def counted(n: int, noun: str, plural: str | None = None) -> str:
    """``n`` and the noun in the right number: "1 row", "2 rows", "1,204 pairs"."""
    return f"{n:,} {noun if n == 1 else plural or noun + 's'}"


def show(value: Any, limit: int = 60) -> str:
    """A short ``repr`` of a cell value for a message (numpy scalars shown as plain Python)."""
    if isinstance(value, np.generic):
        value = value.item()
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def closest(name: str, candidates: Iterable[str]) -> str | None:
    """The candidate most like ``name`` (difflib), or None when nothing is close."""
    options = [str(c) for c in candidates]
    lowered = {c.lower(): c for c in options}
    if name.lower() in lowered:  # a case-only typo is the likeliest of all
        return lowered[name.lower()]
    match = difflib.get_close_matches(name, options, n=1, cutoff=0.6)
    return match[0] if match else None


@dataclass(frozen=True)
class Source:
    """Where a table came from, so messages can name it and its rows."""

    name: str  # the file path, or FRAME_NAME for a DataFrame passed in by the caller
    index: pd.Index | None = None  # the caller's DataFrame index; None for files (rows are 1-based)

    def row(self, position: int) -> str:
        """Name the row at 0-based ``position``: "row 3" for files, "row index 'a'" for frames."""
        if self.index is None:
            return f"row {position + 1}"
        return f"row index {show(self.index[position])}"

    def error(self, message: str, kind: type[DataError] = DataError) -> DataError:
        """A :class:`DataError` (or the subclass ``kind``) reading ``<name>: <message>`` on one line."""
        return kind(one_line(f"{self.name}: {message}"))


_WHOLE_NUMBER_TEXT = re.compile(r"[+-]?[0-9]+\.0+")


def cell_text(value: Any) -> str | None:
    """One cell as a stripped string (None when missing); a whole number written as a float —
    the float 100001.0 or the text ``"100001.0"`` — loses its ``.0``.

    Why the text too: pandas writes an integer id column that had a gap as floats, so a CSV log
    or catalogue saved from pandas spells product 100001 as ``100001.0``, and the same product
    must match its cache, catalogue and labels however it was written."""
    if is_missing(value):
        return None
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    text = str(value).strip()
    return text[: text.index(".")] if _WHOLE_NUMBER_TEXT.fullmatch(text) else text


def as_strings(values: pd.Series) -> pd.Series:
    """Cell values as :func:`cell_text` strings (missing stays missing).

    Ids and categorical labels may arrive as text (CSV), ints (Parquet) or floats (an int column
    with gaps); every spelling of product 100001 (``100001``, ``100001.0``, ``"100001.0"``) must
    compare equal.
    """
    return pd.Series([cell_text(v) for v in values.tolist()], index=values.index, dtype=object)


def is_missing(value: object) -> bool:
    """None, NaN or pd.NA (a cell-level test that, unlike ``pd.isna``, never sees a list as many)."""
    return value is None or value is pd.NA or (isinstance(value, float) and value != value)


def first_bad(mask: pd.Series) -> tuple[int, int]:
    """(0-based position of the first True in ``mask``, number of Trues)."""
    flags = mask.to_numpy(dtype=bool)
    return int(flags.argmax()), int(flags.sum())


def row_at(values: pd.Series, position: int) -> int:
    """The table row of ``values.iloc[position]`` when ``values`` is a subset of the table's rows
    (its index: the table's 0..n-1 positions): what :meth:`Source.row` must be given, so that a
    message names the row of the file, not of the subset (a bad label after three rows left out
    by ``--invalid-rows skip`` was named three rows too early)."""
    return int(values.index[position])


def more(count: int, kinds: str = "") -> str:
    """" (and N more rows)" when one bad row stands for several; ``kinds`` (e.g. ": empty title 2")
    goes inside the brackets."""
    return f" (and {count - 1} more row{'s' if count > 2 else ''}{kinds})" if count > 1 else ""
