"""Read one table file (CSV, TSV, JSON lines, Parquet; plain, ``.gz`` or ``.zip``) into pandas.

Why a module of its own: users bring whatever their search logs were exported as, and the
public datasets come in three of these shapes (ESCI Parquet, WANDS tab-separated ``.csv``,
Kaggle zipped CSV). Every failure, from a missing file to a ragged CSV line, becomes one
:class:`~defectnas.errors.DataError` line naming the file, never a pandas traceback.

Choices:

- The extension picks the reader; under ``.gz`` or ``.zip`` the inner name does
  (``train.csv.zip``, ``x.tsv.gz``; a zip must hold exactly one file, whose own name decides).
- CSV and TSV are read as text (``dtype=str``) with only empty cells as missing, so ids keep
  leading zeros and a query such as "NA" or "null" stays a query.
- A ``.csv`` whose header has tabs and no commas is read as tab-separated: WANDS ships its
  tab-separated tables as ``.csv``.
- Text is decoded by :mod:`~defectnas.data.decoding`: a byte-order mark (UTF-8, UTF-16, UTF-32)
  decides; else UTF-8, with each invalid byte of an otherwise UTF-8 file read as Windows-1252
  and its rows named in one :class:`~defectnas.errors.DataWarning` line; a CSV/TSV with no
  UTF-8 at all is read in the legacy encoding charset-normalizer names (else Windows-1252),
  also said in one warning line. JSON must be UTF-8, as its standard says: a JSON file with
  no UTF-8 at all is refused.
- ``.json`` may hold JSON lines or one array of records; ``.jsonl``/``.ndjson`` hold JSON lines.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import re
import warnings
import zipfile
from pathlib import Path
from typing import IO, Sequence

import pandas as pd

from ..errors import DataWarning
from ._common import Source
from .decoding import Decoded, decode_bytes, describe_fallback

TEXT_FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json"}
FORMATS_BY_EXTENSION = {**TEXT_FORMATS, ".parquet": "parquet", ".pq": "parquet"}
COMPRESSIONS = (".gz", ".zip")
ACCEPTED = ", ".join(FORMATS_BY_EXTENSION) + " (optionally compressed: " + ", ".join(COMPRESSIONS) + ")"


def read_table(path: str | os.PathLike, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """The table in ``path`` with a fresh 0..n-1 index; ``columns`` keeps only those (in order).

    Raises DataError (one line, naming the file) when the file is missing, has an unknown
    extension, cannot be decompressed or decoded, has a malformed row, is empty, or lacks one
    of ``columns``. A decoding fallback is one DataWarning line (see the module docstring).
    """
    return read_table_notes(path, columns)[0]


def read_table_notes(path: str | os.PathLike, columns: Sequence[str] | None = None) -> tuple[pd.DataFrame, dict]:
    """:func:`read_table` and how the text was decoded: ``{"encoding": str | None,
    "fallback_rows": [1-based data rows read by the per-byte fallback, or holding the whole-file Windows-1252
    fallback's non-ASCII bytes], "whole_file": bool}``."""
    path = Path(path)
    src = Source(str(path))
    if not path.exists():
        raise src.error("file not found")
    if path.is_dir():
        raise src.error("is a directory, not a table file")
    kind, compression = _kind(path, src)
    notes = {"encoding": None, "fallback_rows": [], "whole_file": False}
    if compression is None:
        frame = _read(kind, path, src, columns, notes)
    else:
        frame = _read(kind, io.BytesIO(_decompress(path, compression, src)), src, columns, notes)
    if frame.shape[1] == 0:
        raise src.error("file is empty (no columns)")
    if len(frame) == 0:
        raise src.error("table has no rows")
    if columns is not None:
        missing = [c for c in columns if c not in frame.columns]
        if missing:
            raise src.error(f"missing column(s) {', '.join(missing)}; columns present: {', '.join(map(str, frame.columns))}")
        frame = frame[list(columns)]
    return frame.reset_index(drop=True), notes


def _kind(path: Path, src: Source) -> tuple[str, str | None]:
    """(reader kind, compression suffix or None) from the file name."""
    suffix = path.suffix.lower()
    compression = suffix if suffix in COMPRESSIONS else None
    inner = Path(path.stem) if compression else path
    if compression == ".zip":
        member = Path(_zip_member(path, src))
        if member.suffix.lower() in FORMATS_BY_EXTENSION or inner.suffix.lower() not in FORMATS_BY_EXTENSION:
            inner = member  # the member's own name decides; the archive's name only as a fallback
    kind = FORMATS_BY_EXTENSION.get(inner.suffix.lower())
    if kind is None:
        shown = inner.suffix or "(none)"
        raise src.error(f"unknown file type '{shown}' (of '{inner.name}'); accepted: {ACCEPTED}")
    return kind, compression


def _zip_member(path: Path, src: Source) -> str:
    """The one file inside a zip archive (folders and macOS metadata ignored)."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = [n for n in archive.namelist() if not n.endswith("/") and not n.startswith("__MACOSX/")]
    except (zipfile.BadZipFile, OSError) as exc:
        raise src.error(f"not a readable zip archive ({exc})") from None
    if len(names) != 1:
        listed = ", ".join(names[:5]) or "nothing"
        raise src.error(f"a zip must hold exactly one table file, this one holds {len(names)}: {listed}")
    return names[0]


def _decompress(path: Path, compression: str, src: Source) -> bytes:
    try:
        if compression == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        with zipfile.ZipFile(path) as archive:
            return archive.read(_zip_member(path, src))
    except (OSError, EOFError, zipfile.BadZipFile) as exc:
        raise src.error(f"cannot decompress {compression} file ({exc})") from None


def _read(kind: str, source: Path | IO[bytes], src: Source, columns: Sequence[str] | None, notes: dict) -> pd.DataFrame:
    if kind == "parquet":
        return _read_parquet(source, src, columns)
    raw = source.read_bytes() if isinstance(source, Path) else source.read()
    if not raw or raw.isspace():
        raise src.error("file is empty")
    decoded = _decode(raw, src, allow_legacy=kind in ("csv", "tsv"))
    notes["encoding"], notes["whole_file"] = decoded.encoding, decoded.whole_file
    if kind in ("csv", "tsv"):
        frame, sep = _read_delimited(decoded.text, "\t" if kind == "tsv" else None, src)
        rows = _csv_rows(decoded.text, sep, decoded.fallback_lines)
    else:
        frame = _read_json(decoded.text, kind, src)
        rows = _json_rows(decoded.text, kind, decoded.fallback_lines)
    notes["fallback_rows"] = rows
    if decoded.fallback:
        noun = "line" if kind == "json" and decoded.text.lstrip().startswith("[") else "row"
        warnings.warn(f"{src.name}: {describe_fallback(decoded, rows, noun)}", DataWarning, stacklevel=4)
    return frame


def _read_parquet(source: Path | IO[bytes], src: Source, columns: Sequence[str] | None) -> pd.DataFrame:
    import pyarrow.parquet as pq

    try:
        names = pq.read_schema(source).names
        if not isinstance(source, Path):
            source.seek(0)
        wanted = None if columns is None else [c for c in columns if c in names]  # missing: reported later
        return pd.read_parquet(source, columns=wanted)
    except Exception as exc:  # pyarrow raises several unrelated types for a bad file
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise src.error(f"not a readable Parquet file ({first})") from None


def _decode(raw: bytes, src: Source, allow_legacy: bool) -> Decoded:
    try:
        return decode_bytes(raw, allow_legacy=allow_legacy)
    except UnicodeDecodeError as exc:
        bad = raw[exc.start : exc.start + 1].hex()
        line = raw.count(b"\n", 0, exc.start) + 1
        what = "UTF-8" if exc.encoding.startswith("utf-8") else exc.encoding.upper()
        raise src.error(f"cannot decode bytes as {what} (byte 0x{bad} at line {line}, offset {exc.start}); save the file as UTF-8") from None


def _csv_rows(text: str, sep: str, lines: list[int]) -> list[int]:
    """1-based data rows (header excluded, blank lines skipped as pandas does) holding ``lines``."""
    if not lines:
        return []
    reader = csv.reader(io.StringIO(text), delimiter=sep)
    rows, wanted, record, start = [], sorted(lines), -1, 1
    for fields in reader:
        end = reader.line_num
        if fields:  # a blank line is no row
            record += 1
            rows += [record for line in wanted if start <= line <= end and record > 0]
        start = end + 1
    return sorted(set(rows))


def _json_rows(text: str, kind: str, lines: list[int]) -> list[int]:
    """1-based records holding ``lines`` (JSON lines: non-blank lines; a JSON array: the lines)."""
    if not lines or (kind == "json" and text.lstrip().startswith("[")):
        return list(lines)
    record, out, wanted = 0, [], set(lines)
    for number, line in enumerate(text.split("\n"), start=1):
        if line.strip():
            record += 1
            if number in wanted:
                out.append(record)
    return out


def _read_delimited(text: str, sep: str | None, src: Source) -> tuple[pd.DataFrame, str]:
    if sep is None:  # .csv: comma, unless the header has none and plainly uses another (WANDS: tab; Excel's in many locales: ";")
        end = text.find("\n")
        header = text if end < 0 else text[:end]
        others = [c for c in ("\t", ";", "|") if c in header]
        sep = "," if "," in header or not others else max(others, key=header.count)
    try:
        frame = pd.read_csv(io.StringIO(text), sep=sep, dtype=str, keep_default_na=False, na_values=[""])
    except pd.errors.EmptyDataError:
        raise src.error("file is empty") from None
    except (pd.errors.ParserError, ValueError) as exc:
        raise src.error(_parser_message(str(exc))) from None
    if not isinstance(frame.index, pd.RangeIndex):  # the first row had more fields than the header
        frame = _row_names_or_error(frame, text, sep, src)
    _warn_repeated_header_names(text, sep, list(frame.columns), src)
    return frame, sep


def _row_names_or_error(frame: pd.DataFrame, text: str, sep: str, src: Source) -> pd.DataFrame:
    """What pandas read as an index when the first data row has more fields than the header: row
    names (R's ``write.table`` writes a header one name short of every row) when *every* row has
    exactly one field more, kept as a ``row_name`` column with a warning; otherwise the first row
    whose field count differs from the header's is malformed (pandas would shift every value of the
    file by a column: a title read as the query, the label as the title)."""
    reader = csv.reader(io.StringIO(text), delimiter=sep)
    header, start, first_bad = None, 1, None
    counts = set()
    for fields in reader:
        if fields:
            if header is None:
                header = len(fields)
            else:
                counts.add(len(fields))
                if len(fields) != header and first_bad is None:
                    first_bad = (start, len(fields))
        start = reader.line_num + 1
    if header is not None and counts == {header + 1}:
        warnings.warn(f"{src.name}: the header names {header} columns and every row has {header + 1} fields: the first field of "
                      "each row read as its row name, kept as column 'row_name'", DataWarning, stacklevel=5)
        frame.index.name = "row_name"
        return frame.reset_index()
    line, saw = first_bad if first_bad else (2, header + 1 if header else 0)
    raise src.error(_malformed_row(header, line, saw))


def _warn_repeated_header_names(text: str, sep: str, columns: list[str], src: Source) -> None:
    """One DataWarning line when the header names a column twice: pandas keeps both and reads the
    second as "name.1", so a mapping to "name" silently takes the first."""
    end = text.find("\n")
    try:
        names = next(csv.reader([text if end < 0 else text[:end]], delimiter=sep))
    except (csv.Error, StopIteration):
        return
    seen: dict[str, int] = {}
    repeated = []
    for position, name in enumerate(names, start=1):
        if name in seen:
            repeated.append(f"{name!r} (columns {seen[name]} and {position}; the second read as {columns[position - 1]!r})"
                            if position <= len(columns) else f"{name!r} (columns {seen[name]} and {position})")
        else:
            seen[name] = position
    if repeated:
        warnings.warn(src.error(f"the header names a column twice: {'; '.join(repeated[:3])}; a column option naming it takes the "
                                "first: rename one").args[0], DataWarning, stacklevel=4)


def _malformed_row(expected: int, line: int, saw: int) -> str:
    """The one line for a CSV row whose field count is not the header's (pandas' error, or a first row it
    would have read as an index). ``line``: the file line (the header is line 1); a quoted cell may span
    lines, so it is not a data row number."""
    return (f"malformed row at file line {line} (the header is line 1): expected {expected} fields, saw {saw}; a row whose "
            f"values cannot be matched to columns is refused under any --invalid-rows (quote fields that hold the separator)")


def _parser_message(message: str) -> str:
    """pandas' CSV error as "malformed row at line N (...)" when it names the line."""
    found = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", message)
    if found:
        return _malformed_row(*map(int, found.groups()))
    found = re.search(r"EOF inside string starting at row (\d+)", message)
    if found:
        return f"unterminated quote in the row starting at line {int(found.group(1)) + 1}"
    return "malformed CSV (" + " ".join(message.split())[:200] + ")"


def _read_json(text: str, kind: str, src: Source) -> pd.DataFrame:
    if kind == "json" and text.lstrip().startswith("["):
        try:
            records = json.loads(text)
        except json.JSONDecodeError as exc:
            raise src.error(f"malformed JSON at line {exc.lineno}: {json_problem(exc)}") from None
        if not all(isinstance(r, dict) for r in records):
            raise src.error("a JSON array must hold one object per row")
        return pd.DataFrame.from_records(records)
    records = [json_line_record(line, number, src)
               for number, line in enumerate(text.split("\n"), start=1) if line.strip()]  # only \n ends a JSON line: U+2028 may sit in a string
    return pd.DataFrame.from_records(records)


def json_problem(exc: json.JSONDecodeError) -> str:
    """The decoder's reason with its column, as a whole phrase: "Unterminated string starting at
    column 12", "Expecting ',' delimiter at column 30" (``exc.msg`` alone stops at "starting at")."""
    return f"{exc.msg} column {exc.colno}" if exc.msg.endswith(" at") else f"{exc.msg} at column {exc.colno}"


def json_line_record(line: str, number: int, src: Source) -> dict:
    """One JSON-lines row as a dict; a one-line error naming line ``number`` when it is not a JSON object."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise src.error(f"malformed JSON at line {number}: {json_problem(exc)}") from None
    if not isinstance(record, dict):
        raise src.error(f"line {number} is not a JSON object")
    return record
