"""``load_pairs``: any supported file (or DataFrame) to the one table every other module uses.

Why one entry point: training, evaluation, prediction, search and ``defectnas data`` all need
the same thing, whatever the dataset: rows of ``query``, ``title``, ``label`` (1 = search
defect, 0 = relevant), ``product_id`` and, when the source has one, ``split``. Reading,
joining, layout detection, label mapping and validation happen here once, and each problem
is reported as one :class:`~defectnas.errors.DataError` line naming the file and row/column.

Rows are named "row N" (1-based data rows of the file, header excluded; for ESCI/WANDS
directories the rows of the examples/``label.csv`` file) or, for a DataFrame, "row index L"
with the caller's own index label.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Sequence

import pandas as pd

from ._common import FRAME_NAME, Source, as_strings, closest, first_bad, more, show
from .formats import FORMATS, SPECS, FormatSpec, detect, table_spec, with_overrides
from .multifile import complete, resolve_directory
from .readers import read_table
from .text import normalize_series, normalize_text

SPLITS = ("train", "valid", "test")
SPLIT_SPELLINGS = {"train": "train", "training": "train", "valid": "valid", "validation": "valid",
                   "val": "valid", "dev": "valid", "test": "test", "testing": "test"}


def load_pairs(
    data: str | os.PathLike | pd.DataFrame,
    format: str = "auto",
    query_col: str | None = None,
    title_col: str | None = None,
    label_col: str | None = None,
    defect_labels: Sequence[str] | str | None = None,
    defect_below: float | None = None,
    labels: bool = True,
    require_both_classes: bool = True,
    keep: Sequence[str] = (),
) -> pd.DataFrame:
    """Read query–product pairs into columns ``query``, ``title``, ``label``, ``product_id`` [, ``split``].

    - ``data``: a table file (see :func:`~defectnas.data.readers.read_table`), an ESCI or WANDS
      directory, ESCI's examples file or WANDS' ``label.csv`` (texts joined from the files
      beside them), or a DataFrame.
    - ``format``: one of :data:`~defectnas.data.formats.FORMATS`. With ``auto``, giving both
      ``query_col`` and ``title_col`` means ``table``; for a named format the column and label
      options replace that layout's own.
    - ``labels=False`` (prediction input): the label column is optional; when present it is
      still mapped (and validated) into ``label``.
    - ``require_both_classes``: with labels, refuse a table without defects or without
      relevant pairs (training needs both).

    ``query`` and ``title`` are normalised (:func:`~defectnas.data.text.normalize_text`);
    ``label`` is int64 0/1; ``product_id`` is the dataset's id as text or, when it has none,
    the first 12 hex digits of the SHA-1 of the normalised title; ``split`` (train/valid/test)
    appears only when the source has a split column. Rows keep the source order.
    ``keep``: source columns copied through unchanged where the source has them (e.g. the
    column of per-group thresholds).
    """
    if format not in FORMATS:
        raise Source(_name(data)).error(f"unknown format {format!r}; choose one of {', '.join(FORMATS)}")
    frame, src = _read(data, format)
    if format == "auto" and query_col and title_col:
        format = "table"
    if format == "table":
        spec = table_spec(src, query_col, title_col, label_col, defect_labels, defect_below, labels)
    else:
        spec = SPECS[format] if format != "auto" else detect(list(frame.columns), src, labels)
        spec = with_overrides(spec, src, query_col, title_col, label_col, defect_labels, defect_below)
    _check_columns(frame, spec, src, labels)

    out = pd.DataFrame(index=frame.index)
    out["query"] = _text(frame, spec.query_col, "query", src)
    out["title"] = _text(frame, spec.title_col, "title", src)
    if spec.label_col in frame.columns and spec.rule is not None:
        out["label"] = spec.rule.to_defect(frame[spec.label_col], src, spec.label_col)
        if labels and require_both_classes:
            _check_classes(out["label"], src)
    out["product_id"] = _product_ids(frame, spec, out["title"])
    split_col = spec.split_col or "split"
    if split_col in frame.columns:
        out["split"] = _splits(frame[split_col], src, split_col)
    for column in ("query", "title", "product_id", "split"):
        if column in out.columns:
            out[column] = out[column].astype(str)
    for column in keep:
        if column in frame.columns and column not in out.columns:
            out[column] = frame[column].to_numpy()
    return out.reset_index(drop=True)


def _name(data: object) -> str:
    return FRAME_NAME if isinstance(data, pd.DataFrame) else str(data)


def _read(data: str | os.PathLike | pd.DataFrame, format: str) -> tuple[pd.DataFrame, Source]:
    """The raw table (0..n-1 index) and how to name it and its rows."""
    if isinstance(data, pd.DataFrame):
        src = Source(FRAME_NAME, index=data.index)
        if len(data) == 0:
            raise src.error("table has no rows")
        frame = data.reset_index(drop=True)
        frame.columns = [str(c) for c in frame.columns]
        return frame, src
    path = Path(data)
    if path.is_dir():
        path = resolve_directory(path)
    return complete(read_table(path), path, format), Source(str(path))


def _check_columns(frame: pd.DataFrame, spec: FormatSpec, src: Source, labels: bool) -> None:
    missing = [c for c in spec.required(labels) if c not in frame.columns]
    if not missing:
        return
    present = list(frame.columns)
    parts = []
    for column in missing:
        guess = closest(column, present)
        parts.append(f"{column!r}" + (f" (did you mean {guess!r}?)" if guess else ""))
    raise src.error(
        f"missing column {', '.join(parts)} for format {spec.name!r}; columns present: {', '.join(present)}"
    )


def _text(frame: pd.DataFrame, column: str, what: str, src: Source) -> pd.Series:
    """Normalised text of ``column``; an empty or missing cell is an error naming its row."""
    text = normalize_series(frame[column])
    empty = text.isna() | (text == "")
    if empty.any():
        pos, count = first_bad(empty)
        raise src.error(f"{src.row(pos)}: empty {what} in column {column!r}{more(count)}")
    return text


def _check_classes(label: pd.Series, src: Source) -> None:
    defects = int(label.sum())
    if defects == 0:
        raise src.error("no defect pairs (label 1) in the table; training and evaluation need both classes")
    if defects == len(label):
        raise src.error("no relevant pairs (label 0) in the table; training and evaluation need both classes")


def title_id(title: str) -> str:
    """A stable product id for a dataset without ids: SHA-1 of the normalised title, 12 hex digits."""
    return hashlib.sha1(normalize_text(title).encode("utf-8")).hexdigest()[:12]


def _product_ids(frame: pd.DataFrame, spec: FormatSpec, titles: pd.Series) -> pd.Series:
    ids = pd.Series([None] * len(frame), index=frame.index, dtype=object)
    if spec.product_id_col and spec.product_id_col in frame.columns:
        ids = as_strings(frame[spec.product_id_col])
        ids[ids == ""] = None
    missing = ids.isna()
    if missing.any():
        ids[missing] = [title_id(t) for t in titles[missing]]
    return ids


def _splits(values: pd.Series, src: Source, column: str) -> pd.Series:
    text = as_strings(values)
    canonical = text.map(lambda v: None if v is None else SPLIT_SPELLINGS.get(v.lower()))
    bad = canonical.isna()
    if bad.any():
        pos, count = first_bad(bad)
        raise src.error(f"{src.row(pos)}: {column} {show(values.iloc[pos])} is not one of {', '.join(SPLITS)}{more(count)}")
    return canonical
