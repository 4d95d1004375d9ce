"""Write a table in the format its file name asks for, atomically.

Why: ``predict`` output should open in whatever the user reads their input with (a CSV in a
spreadsheet, Parquet in pandas), and a killed run must not leave half a file.
"""

from __future__ import annotations

import io
from pathlib import Path

import pandas as pd

from ..errors import DataError
from ..storage import atomic_write_bytes

WRITERS = (".csv", ".tsv", ".jsonl", ".parquet")


def check_writable_table(path: str | Path) -> Path:
    """``path`` when :func:`write_table` can write its format, else DataError (one line): called
    before the work, so a long run never ends in a wrong extension."""
    path = Path(path)
    if path.suffix.lower() not in WRITERS:
        raise DataError(f"{path}: cannot write a {path.suffix.lower() or 'file without extension'}; use one of {', '.join(WRITERS)}")
    return path


def write_table(df: pd.DataFrame, path: str | Path) -> Path:
    """Write ``df`` as CSV, TSV, JSONL or Parquet, chosen by the file's extension."""
    path = check_writable_table(path)
    suffix = path.suffix.lower()
    buf = io.BytesIO()
    if suffix == ".csv":
        buf.write(df.to_csv(index=False).encode("utf-8"))
    elif suffix == ".tsv":
        buf.write(df.to_csv(index=False, sep="\t").encode("utf-8"))
    elif suffix == ".jsonl":
        buf.write(df.to_json(orient="records", lines=True, force_ascii=False).encode("utf-8"))
    else:  # .parquet
        df.to_parquet(buf, index=False)
    atomic_write_bytes(path, buf.getvalue())
    return path
