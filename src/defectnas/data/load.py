"""``load_pairs``: any supported file (or DataFrame) to the one table every other module uses.

Why one entry point: training, evaluation, prediction, search and ``defectnas data`` all need
the same thing, whatever the dataset: rows of ``query``, ``title``, ``label`` (1 = search
defect, 0 = relevant), ``product_id`` and, when the source has one, ``split``. Reading,
joining, layout detection, label mapping and validation happen here once, and each problem
is reported as one :class:`~defectnas.errors.DataError` line naming the file and row/column.

Rows are named "row N" (1-based data rows of the file, header excluded; for ESCI/WANDS
directories the rows of the examples/``label.csv`` file) or, for a DataFrame, "row index L"
with the caller's own index label.

Invalid rows — a query or title that is missing or empty once normalised (a cell of zero-width
spaces is empty), or a missing label — follow one policy, ``invalid_rows``: ``"error"`` raises
naming the first such row and the count, ``"skip"`` leaves them out with one
:class:`~defectnas.errors.DataWarning` line giving the count per reason and the first row
numbers. :func:`read_pairs` also returns the table as read and each row's reason, so
``predict`` can keep every row of the user's table.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from ..errors import DataError, DataWarning
from ._common import FRAME_NAME, Source, as_strings, closest, first_bad, more, show
from .formats import FORMATS, SPECS, FormatSpec, detect, table_spec, with_overrides
from .multifile import complete, resolve_directory
from .readers import read_table_notes
from .text import normalize_series, normalize_text

INVALID_ROWS = ("error", "skip")  # the --invalid-rows policies
DEFAULT_INVALID_ROWS = "skip"  # the command line's default (load_pairs' own default is "error")
SHOWN_ROWS = 10  # row numbers named in a warning or report


@dataclass
class PairsRead:
    """What :func:`read_pairs` read: the pairs, the table as given, and what was left out."""

    pairs: pd.DataFrame  # load_pairs' table of the valid rows (fresh 0..n-1 index)
    source: pd.DataFrame  # the table as read: every row and column, original values (0..n-1 index)
    positions: np.ndarray  # for each row of ``pairs``, its 0-based position in ``source``
    reasons: pd.Series  # per ``source`` row: "" or why it is invalid (e.g. "empty title")
    src: Source  # names the file and its rows
    notes: dict = field(default_factory=dict)  # reading notes: encoding, fallback_rows, whole_file

    def row_names(self, positions: Sequence[int]) -> list[str]:
        """"row N" / "row index L" of ``source`` positions."""
        return [self.src.row(int(p)) for p in positions]

    def integrity(self) -> dict:
        """JSON-ready account of the reading: rows read, encoding fallbacks, invalid rows."""
        bad = self.reasons[self.reasons != ""]
        return {
            "rows_read": int(len(self.source)),
            "encoding": self.notes.get("encoding"),
            "encoding_whole_file": bool(self.notes.get("whole_file")),
            "encoding_fallback_rows": list(self.notes.get("fallback_rows", [])),
            "invalid_rows": int(len(bad)),
            "invalid_reasons": {str(k): int(v) for k, v in bad.value_counts().sort_index().items()},
            "invalid_first_rows": self.row_names(bad.index[:SHOWN_ROWS]),
        }

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
    invalid_rows: str = "error",
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
    column of per-group thresholds). ``invalid_rows``: ``"error"`` or ``"skip"`` (see the
    module docstring).
    """
    return read_pairs(data, format, query_col, title_col, label_col, defect_labels, defect_below, labels,
                      require_both_classes, keep, invalid_rows).pairs


def read_pairs(
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
    invalid_rows: str = "error",
    id_col: str | None = None,
    skipped_as: str = "left out",
    remembered_layout: Mapping[str, Any] | None = None,
) -> PairsRead:
    """:func:`load_pairs`, keeping the table as read and why each left-out row was left out.

    ``id_col``: the column of product ids when it is not the format's own (a table's
    ``product_id``); DataError naming the file when the column is absent. ``skipped_as``: how
    the warning line about invalid rows describes them (predict keeps them, unscored).
    ``remembered_layout``: the layout options a model was trained with (:data:`LAYOUT_OPTIONS`,
    kept in its ``splits.json``). Used only when none is given here and the table has the
    columns it names, so the same file layout needs the flags once; ``notes["layout"]`` then
    says ``"remembered"``."""
    if invalid_rows not in INVALID_ROWS:
        raise Source(_name(data)).error(f"invalid_rows (--invalid-rows) must be one of {', '.join(INVALID_ROWS)}, got {invalid_rows!r}")
    if format not in FORMATS:
        raise Source(_name(data)).error(f"unknown format {format!r}; choose one of {', '.join(FORMATS)}")
    frame, src, notes = _read(data, format)
    given = format != "auto" or any(v is not None for v in (query_col, title_col, label_col, defect_labels, defect_below))
    if remembered_layout and not given and _layout_fits(remembered_layout, frame, src, labels):
        format = remembered_layout.get("format") or "auto"
        query_col, title_col, label_col, defect_labels, defect_below = (remembered_layout.get(k) for k in LAYOUT_OPTIONS[1:])
        notes["layout"] = "remembered"
    spec = _spec(frame, src, format, query_col, title_col, label_col, defect_labels, defect_below, labels)
    if id_col:
        if id_col not in frame.columns:
            raise src.error(f"no column {id_col!r} for --id-col; columns present: {', '.join(map(str, frame.columns))}")
        spec = replace(spec, product_id_col=id_col)
    _check_columns(frame, spec, src, labels)
    notes["columns"] = {"query": spec.query_col, "title": spec.title_col, "label": spec.label_col, "product_id": spec.product_id_col}

    out = pd.DataFrame(index=frame.index)
    out["query"] = normalize_series(frame[spec.query_col])
    out["title"] = normalize_series(frame[spec.title_col])
    reasons = pd.Series("", index=frame.index, dtype=object)
    has_label = spec.label_col in frame.columns and spec.rule is not None
    checks = [(spec.query_col, "empty query", _empty(out["query"])), (spec.title_col, "empty title", _empty(out["title"]))]
    if has_label and labels:
        checks.append((spec.label_col, "missing label", _missing_cells(frame[spec.label_col])))
    elif has_label and _missing_cells(frame[spec.label_col]).any():
        has_label = False  # unlabelled use (predict): a partly empty label column is not needed, so not read
    for column, reason, mask in checks:
        reasons[mask & (reasons == "")] = reason
    valid = (reasons == "").to_numpy()
    defect, label_error = None, None
    if has_label:  # read before the policy, so that one run names every kind of problem the table has
        try:
            defect = spec.rule.to_defect(frame.loc[valid, spec.label_col], src, spec.label_col).to_numpy()
        except DataError as e:
            label_error = e
    if label_error is not None and not labels:  # predict, select: labels are optional there, so unreadable ones are not fatal
        warnings.warn(f"{label_error}; the {spec.label_col!r} column is not needed here and is not read", DataWarning, stacklevel=3)
        has_label, label_error = False, None
    _apply_policy(reasons, checks, invalid_rows, src, skipped_as, also=label_error)
    if label_error is not None:  # a label that is there but unreadable is never skipped: the wrong column or rule, more often than not
        raise label_error
    if has_label:
        out["label"] = pd.Series(0, index=frame.index, dtype="int64")
        out.loc[valid, "label"] = defect
    out["product_id"] = None
    out.loc[valid, "product_id"] = _product_ids(frame.loc[valid], spec, out.loc[valid, "title"]).to_numpy()
    split_col = spec.split_col or "split"
    if split_col in frame.columns:
        out["split"] = _splits(frame[split_col], src, split_col)
    for column in ("query", "title", "product_id", "split"):
        if column in out.columns:
            out[column] = out[column].astype(str)
    for column in keep:
        if column in frame.columns and column not in out.columns:
            out[column] = frame[column].to_numpy()
    pairs = out.loc[valid].reset_index(drop=True)
    if "label" in pairs.columns and labels and require_both_classes:
        _check_classes(pairs["label"], src)
    return PairsRead(pairs, frame, np.flatnonzero(valid), reasons, src, notes)


LAYOUT_OPTIONS = ("format", "query_col", "title_col", "label_col", "defect_labels", "defect_below")


def layout_options(**options: Any) -> dict[str, Any]:
    """The layout options of a read that were set (not auto-detected): what a model remembers of
    its training table, empty when detection alone read it."""
    return {k: options[k] for k in LAYOUT_OPTIONS if options.get(k) not in (None, "auto")}


def _layout_fits(layout: Mapping[str, Any], frame: pd.DataFrame, src: Source, labels: bool) -> bool:
    """Whether ``frame`` has every column the remembered layout reads (its label column only when labels are needed)."""
    try:
        spec = _spec(frame, src, layout.get("format") or "auto", *(layout.get(k) for k in LAYOUT_OPTIONS[1:]), labels)
    except DataError:
        return False
    return all(c in frame.columns for c in spec.required(labels))


def _spec(frame: pd.DataFrame, src: Source, format: str, query_col, title_col, label_col, defect_labels, defect_below,
          labels: bool) -> FormatSpec:
    """The layout a read uses: with ``auto``, both a query and a title column mean ``table``; a
    named format's own columns and labels give way to the options given."""
    if format == "auto" and query_col and title_col:
        format = "table"
    if format == "table":
        return table_spec(src, query_col, title_col, label_col, defect_labels, defect_below, labels)
    spec = SPECS[format] if format != "auto" else detect(list(frame.columns), src, labels)
    return with_overrides(spec, src, query_col, title_col, label_col, defect_labels, defect_below)


def _empty(text: pd.Series) -> pd.Series:
    return text.isna() | (text == "")


def _missing_cells(values: pd.Series) -> pd.Series:
    return values.isna() | (as_strings(values).fillna("") == "")


def _apply_policy(reasons: pd.Series, checks: list, policy: str, src: Source, skipped_as: str = "left out",
                  also: DataError | None = None) -> None:
    """Raise for the first invalid row ("error"), or say in one warning line what is left out
    (``skipped_as``: how the caller treats them, e.g. kept unscored in predict's output).

    The error counts the other invalid rows by kind, and ends with ``also`` (the labels' own
    problem, which no policy skips): a user who fixes what the message names does not meet the
    next kind on the next run."""
    bad = reasons != ""
    if not bad.any():
        return
    pos, count = first_bad(bad)
    if policy == "error":
        column = next(c for c, reason, _ in checks if reason == reasons.iloc[pos])
        rest = reasons[bad].iloc[1:].value_counts().sort_index()
        kinds = f": {', '.join(f'{reason} {n}' for reason, n in rest.items())}" if len(rest) > 1 or (
            len(rest) == 1 and rest.index[0] != reasons.iloc[pos]) else ""
        label = f"; and {str(also).removeprefix(f'{src.name}: ')}" if also is not None else ""
        raise src.error(f"{src.row(pos)}: {reasons.iloc[pos]} in column {column!r}{more(count, kinds)} "
                        f"(--invalid-rows skip leaves such rows out){label}")
    warnings.warn(src.error(skipped_line(reasons, src, skipped_as)).args[0], DataWarning, stacklevel=4)


def skipped_line(reasons: pd.Series, src: Source, what: str = "left out") -> str:
    """"N invalid rows left out (empty title 3, empty query 1): row 5, row 9, …"."""
    bad = reasons[reasons != ""]
    by_reason = ", ".join(f"{reason} {n}" for reason, n in bad.value_counts().sort_index().items())
    positions = [reasons.index.get_loc(i) for i in bad.index[:SHOWN_ROWS]]
    shown = ", ".join(src.row(p) for p in positions) + (", …" if len(bad) > SHOWN_ROWS else "")
    return f"{len(bad)} invalid row{'s' if len(bad) != 1 else ''} {what} ({by_reason}): {shown}"


def _name(data: object) -> str:
    return FRAME_NAME if isinstance(data, pd.DataFrame) else str(data)


def _read(data: str | os.PathLike | pd.DataFrame, format: str) -> tuple[pd.DataFrame, Source, dict]:
    """The raw table (0..n-1 index), how to name it and its rows, and how it was decoded."""
    if isinstance(data, pd.DataFrame):
        src = Source(FRAME_NAME, index=data.index)
        if len(data) == 0:
            raise src.error("table has no rows")
        frame = data.reset_index(drop=True)
        frame.columns = [str(c) for c in frame.columns]
        return frame, src, {}
    path = Path(data)
    if path.is_dir():
        path = resolve_directory(path)
    frame, notes = read_table_notes(path)
    return complete(frame, path, format), Source(str(path)), notes


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


def missing_class(label: pd.Series) -> str | None:
    """"defect" when no label is 1, "relevant" when none is 0 (an empty table: "defect"), else None."""
    defects = int(label.sum())
    return "defect" if defects == 0 else "relevant" if defects == len(label) else None


def _check_classes(label: pd.Series, src: Source) -> None:
    missing = missing_class(label)
    if missing:
        raise src.error(f"no {missing} pairs (label {int(missing == 'defect')}) in the table; training and evaluation need both classes")


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
