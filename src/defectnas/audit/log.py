"""Read a search engine's result log in batches: one row per shown result, in one layout.

Why a module of its own: a result log is not a table of labelled pairs (``load_pairs``) but what
an engine showed — a query, a product (id or title), its 1-based position, optionally traffic
and grouping columns — and it can be far larger than memory. Every layout becomes batches of
the same columns:

    _row        int64   1-based data row of the source (UBI: line of the query event)
    _query      object  the query normalised as ``train`` and ``predict`` normalise it
                        (:func:`~defectnas.data.normalize_text`): what queries.csv, --by groups and
                        the baseline pairing key queries by, so "Drill", "ＤＲＩＬＬ" and "drill" + a
                        zero-width space are one query
    _query_text object  the query as logged (stripped): what is scored (normalised there) and shown
    _product    object  product id as text, or, without one, ``title_id`` of the title; with a
                        ``product_locale`` column, the cache's (locale, id) key
    _title      object  the title when the log has one, else None
    _position   int64   1-based position on the result page
    _weight     float64 traffic weight of the row: ``impressions``, else the query's ``count``, else 1

beside the log's own columns (kept for ``scored.parquet``). Layouts:

- Any table ``read_table`` takes (CSV, TSV, JSON lines, Parquet; .gz/.zip). Columns are found
  by name (:data:`QUERY_COLUMNS`, :data:`ID_COLUMNS`, :data:`TITLE_COLUMNS`,
  :data:`POSITION_COLUMNS`) or named with the ``*_col`` options. Plain Parquet, CSV/TSV and
  JSON lines (also gzipped or zipped) are streamed ``batch_rows`` at a time; a gzipped or
  zipped Parquet file or a JSON array is read whole, then cut into batches.
- OpenSearch User Behavior Insights query events (JSON lines with ``user_query`` and
  ``query_response_hit_ids``): each event (one search) becomes one row per hit, position =
  index in the hit list + 1, ``product_id`` = the hit id. Identical (normalised query, hit,
  position) rows of several events are collapsed into one row whose ``impressions`` counts the
  events (the query as the first of them spelt it).
  Events are read in batches and collapsed as they come: what is held is one batch of
  events and one row per distinct shown (query, hit, position), never all the events.

Bad input is one :class:`~defectnas.errors.DataError` line naming the file, row and column.
"""

from __future__ import annotations

import gzip
import io
import itertools
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd

from ..data import normalize_text, read_table, title_id
from ..data._common import Source, as_strings, cell_text, closest, first_bad, is_missing, more, show
from ..data.readers import json_line_record

QUERY_COLUMNS = ("query", "search_term", "user_query", "keywords")
ID_COLUMNS = ("product_id", "product_uid", "doc_id", "hit_id")
TITLE_COLUMNS = ("title", "product_title", "product_name")
POSITION_COLUMNS = ("position", "rank")
IMPRESSIONS, COUNT = "impressions", "count"
LOCALE = "product_locale"  # with a product id: products are keyed by (locale, id), as the cache keys them
UBI_QUERY, UBI_HITS = "user_query", "query_response_hit_ids"
INTERNAL = ("_row", "_query", "_query_text", "_product", "_title", "_position", "_weight")


@dataclass
class LogLayout:
    """Which source columns the log's fields come from (None: absent)."""

    query: str  # column of the query
    product: str | None  # column of the product id
    title: str | None  # column of the title
    position: str  # column of the 1-based position
    impressions: str | None  # per-row traffic
    count: str | None  # per-query traffic (searches of the query)
    ubi: bool = False  # read as OpenSearch UBI query events

    @property
    def traffic(self) -> str | None:
        return self.impressions or self.count


def iter_log(path: str | os.PathLike, batch_rows: int = 200_000, by: tuple[str, ...] = (), query_col: str | None = None,
             id_col: str | None = None, title_col: str | None = None, position_col: str | None = None,
             skipped: list[tuple[int, str, dict]] | None = None) -> Iterator[tuple[pd.DataFrame, LogLayout]]:
    """Yield (batch, layout): batches of at most ``batch_rows`` rows with the columns of the module
    docstring plus the log's own, in source order. ``by``: grouping columns that must exist.
    DataError (one line) for a missing file, column or bad cell — unless ``skipped`` is a list:
    then a row with a bad cell (empty query, neither id nor title, bad position or traffic) is left
    out of its batch and ``(row, reason, its cells of the layout's columns)`` appended to it (``audit --invalid-rows skip``). A bad
    UBI event is an error either way."""
    path = Path(path)
    src = Source(str(path))
    if batch_rows < 1:
        raise src.error("batch_rows must be at least 1")
    layout = None
    offset = 0
    pages = None
    for raw in _raw_batches(path, src, batch_rows):
        if layout is None:
            layout = _layout(list(raw.columns), src, query_col, id_col, title_col, position_col)
            missing = [c for c in by if c not in raw.columns]
            if missing:
                guess = closest(missing[0], raw.columns)
                raise src.error(f"no column {missing[0]!r} for --by" + (f" (did you mean {guess!r}?)" if guess else "")
                                + f"; columns present: {', '.join(map(str, raw.columns))}")
            pages = _UbiPages(src, by) if layout.ubi else None
        if pages is not None:
            pages.add(raw, offset)  # collapsed over the whole file before any row is yielded
        else:
            batch = _normalise(raw, layout, src, offset, skipped)
            if len(batch) or not len(raw):  # (every row of a batch skipped: nothing to yield; a header-only file still says its layout)
                yield batch, layout
        offset += len(raw)
    if layout is None:
        raise src.error("table has no rows")
    if pages is not None:
        for raw in pages.frames(batch_rows):
            yield _normalise(raw, layout, src, 0), layout


def log_layout(path: str | os.PathLike, query_col: str | None = None, id_col: str | None = None, title_col: str | None = None,
               position_col: str | None = None) -> LogLayout:
    """The log's layout from its first rows only (what ``iter_log`` would find), without reading on."""
    path = Path(path)
    src = Source(str(path))
    for raw in _raw_batches(path, src, 1000):
        return _layout(list(raw.columns), src, query_col, id_col, title_col, position_col)
    raise src.error("table has no rows")


# ------------------------------------------------------------------- reading
def _raw_batches(path: Path, src: Source, batch_rows: int) -> Iterator[pd.DataFrame]:
    if not path.exists():
        raise src.error("file not found")
    if path.is_dir():
        raise src.error("is a directory, not a result log file")
    name = path.name.lower()
    packed, inner = None, name
    if name.endswith(".gz"):
        packed, inner = "gz", name[:-3]
    elif name.endswith(".zip"):
        from ..data.readers import FORMATS_BY_EXTENSION, _zip_member

        member = _zip_member(path, src).lower()  # as read_table: the member's own name decides, else the archive's
        packed = member
        inner = member if Path(member).suffix in FORMATS_BY_EXTENSION or Path(name[:-4]).suffix not in FORMATS_BY_EXTENSION else name[:-4]
    if inner.endswith((".parquet", ".pq")) and packed is None:
        yield from _parquet_batches(path, src, batch_rows)
    elif inner.endswith((".csv", ".tsv")):
        yield from _delimited_batches(path, src, batch_rows, packed, "\t" if inner.endswith(".tsv") else None)
    elif inner.endswith((".jsonl", ".ndjson")) or (inner.endswith(".json") and not _is_json_array(path, packed)):
        yield from _json_lines_batches(path, src, batch_rows, packed)
    else:  # zipped or gzipped Parquet, a JSON array: read whole (read_table names every problem), then cut
        frame = read_table(path)
        for start in range(0, len(frame), batch_rows):
            yield frame.iloc[start : start + batch_rows].reset_index(drop=True)


def _open_text(path: Path, packed: str | None) -> io.TextIOBase:
    """The log as text, streamed: plain, gzipped (``packed="gz"``) or the named member of a zip
    archive (decompressed as it is read, never whole)."""
    if packed is None:
        raw = open(path, "rb")
    elif packed == "gz":
        raw = gzip.open(path, "rb")
    else:
        import zipfile

        with zipfile.ZipFile(path) as archive:  # the member's stream keeps the file open until it is closed
            raw = archive.open(next(n for n in archive.namelist() if n.lower() == packed))
    head = raw.read(1 << 20)
    raw.seek(0)
    try:
        head.decode("utf-8-sig")
        encoding = "utf-8-sig"
    except UnicodeDecodeError as e:
        encoding = "utf-8-sig" if e.start > len(head) - 4 else "latin-1"  # a cut multi-byte char at the end is fine
    return io.TextIOWrapper(raw, encoding=encoding, newline="")


def _is_json_array(path: Path, packed: str | None) -> bool:
    with _open_text(path, packed) as f:
        return f.read(4096).lstrip().startswith("[")


def _parquet_batches(path: Path, src: Source, batch_rows: int) -> Iterator[pd.DataFrame]:
    import pyarrow.parquet as pq

    try:
        file = pq.ParquetFile(path)
        batches = file.iter_batches(batch_size=batch_rows)
    except Exception as e:  # pyarrow raises several unrelated types for a bad file
        raise src.error(f"not a readable Parquet file ({_first_line(e)})") from None
    while True:
        try:
            batch = next(batches)
        except StopIteration:
            return
        except Exception as e:
            raise src.error(f"not a readable Parquet file ({_first_line(e)})") from None
        yield batch.to_pandas()


def _delimited_batches(path: Path, src: Source, batch_rows: int, packed: str | None, sep: str | None) -> Iterator[pd.DataFrame]:
    with _open_text(path, packed) as f:
        if sep is None:  # .csv: comma, unless the header is plainly tab-separated (as read_table decides)
            header = f.readline()
            f.seek(0)
            sep = "\t" if "\t" in header and "," not in header else ","
        try:
            reader = pd.read_csv(f, sep=sep, dtype=str, keep_default_na=False, na_values=[""], chunksize=batch_rows)
            for chunk in reader:
                yield chunk.reset_index(drop=True)
        except pd.errors.EmptyDataError:
            raise src.error("file is empty") from None
        except (pd.errors.ParserError, ValueError, UnicodeDecodeError) as e:
            from ..data.readers import _parser_message

            raise src.error(_parser_message(str(e))) from None


def _json_lines_batches(path: Path, src: Source, batch_rows: int, packed: str | None) -> Iterator[pd.DataFrame]:
    records: list[dict] = []
    lines: list[int] = []
    with _open_text(path, packed) as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            records.append(json_line_record(line, number, src))
            lines.append(number)
            if len(records) == batch_rows:
                yield _with_lines(records, lines)
                records, lines = [], []
    if records:
        yield _with_lines(records, lines)


def _with_lines(records: list[dict], lines: list[int]) -> pd.DataFrame:
    frame = pd.DataFrame.from_records(records)
    frame.attrs["lines"] = np.asarray(lines, dtype=np.int64)  # source line of each record (blank lines skipped)
    return frame


# -------------------------------------------------------------------- layout
def _layout(columns: list[str], src: Source, query_col, id_col, title_col, position_col) -> LogLayout:
    if UBI_QUERY in columns and UBI_HITS in columns and query_col is None and position_col is None:
        return LogLayout("query", "product_id", None, "position", IMPRESSIONS, None, ubi=True)  # the exploded rows' columns
    query = _pick(query_col, QUERY_COLUMNS, columns, src, "query", "--query-col", required=True)
    product = _pick(id_col, ID_COLUMNS, columns, src, "product id", "--id-col", required=False)
    title = _pick(title_col, TITLE_COLUMNS, columns, src, "title", "--title-col", required=False)
    if product is None and title is None:
        raise src.error(f"no product column: need a product id ({', '.join(ID_COLUMNS)}; --id-col) or a title "
                        f"({', '.join(TITLE_COLUMNS)}; --title-col); columns present: {', '.join(columns)}")
    position = _pick(position_col, POSITION_COLUMNS, columns, src, "position", "--position-col", required=True)
    return LogLayout(query, product, title, position, IMPRESSIONS if IMPRESSIONS in columns else None,
                     COUNT if COUNT in columns and IMPRESSIONS not in columns else None)


def _pick(given: str | None, candidates: tuple[str, ...], columns: list[str], src: Source, what: str, flag: str,
          required: bool) -> str | None:
    if given is not None:
        if given not in columns:
            guess = closest(given, columns)
            raise src.error(f"no column {given!r} ({flag})" + (f" (did you mean {guess!r}?)" if guess else "")
                            + f"; columns present: {', '.join(columns)}")
        return given
    found = next((c for c in candidates if c in columns), None)
    if found is None and required:
        raise src.error(f"no {what} column ({', '.join(candidates)}); name it with {flag}; columns present: {', '.join(columns)}")
    return found


class _UbiPages:
    """UBI query events → one row per (query, hit, position[, ``by`` values of the event]),
    ``impressions`` = events that showed it.

    Fed event batch by event batch, so what is held is one batch of events and one row per
    distinct shown (query, hit, position) — not the events, of which a busy engine logs many per
    page. Rows come out in order of first appearance, each with the source line of its first
    event."""

    def __init__(self, src: Source, by: tuple[str, ...] = ()) -> None:
        self.src, self.by = src, by
        self.rows: dict[tuple, list] = {}

    def add(self, events: pd.DataFrame, offset: int) -> None:
        """One batch of events; ``offset``: data rows before it (when the reader gives no line numbers)."""
        lines = events.attrs.get("lines")
        if lines is None:
            lines = np.arange(offset + 1, offset + len(events) + 1)
        rows, by = self.rows, self.by
        groups = zip(*(events[c].tolist() for c in by)) if by else iter(lambda: (), None)
        for line, query, hits, extra in zip(lines, events[UBI_QUERY].tolist(), events[UBI_HITS].tolist(), groups):
            normalised = "" if is_missing(query) else normalize_text(str(query))
            if not normalised:
                raise self.src.error(f"line {line}: empty {UBI_QUERY!r} (nothing left once normalised)")
            if isinstance(hits, str):  # some exporters store the list as a JSON string
                try:
                    hits = json.loads(hits)
                except json.JSONDecodeError:
                    hits = None
            if isinstance(hits, np.ndarray):  # a list column read from Parquet
                hits = hits.tolist()
            if not isinstance(hits, (list, tuple)):
                raise self.src.error(f"line {line}: {UBI_HITS!r} is not a list of ids ({show(hits)})")
            text = str(query).strip()
            for position, hit in enumerate(hits, start=1):
                key = (normalised, str(hit), position, *extra)  # one query however it is spelt, as the audit groups queries
                if key in rows:
                    rows[key][-1] += 1
                else:
                    rows[key] = [int(line), text, *key[1:], 1]

    def frames(self, batch_rows: int) -> Iterator[pd.DataFrame]:
        """The collapsed rows, ``batch_rows`` at a time (source line of each in ``attrs["lines"]``)."""
        values = iter(self.rows.values())
        while True:
            part = list(itertools.islice(values, batch_rows))
            if not part:
                return
            frame = pd.DataFrame(part, columns=["_line", "query", "product_id", "position", *self.by, IMPRESSIONS])
            frame.attrs["lines"] = frame.pop("_line").to_numpy()
            yield frame


def _normalise(raw: pd.DataFrame, layout: LogLayout, src: Source, offset: int,
               skipped: list[tuple[int, str, dict]] | None = None) -> pd.DataFrame:
    """The batch with the internal columns (module docstring) added; an error names the first
    source row with a bad cell (of any kind) and counts the others. With ``skipped`` (a list),
    rows with a bad cell are left out and listed there instead."""
    lines = raw.attrs.get("lines")
    rows = np.asarray(lines, dtype=np.int64) if lines is not None else np.arange(offset + 1, offset + len(raw) + 1, dtype=np.int64)
    where = Source(src.name)
    reasons = np.full(len(raw), None, dtype=object)  # each bad row's first reason

    def bad(mask: pd.Series, message: str, column: str, cells: pd.Series | None = None) -> None:
        """``message`` may hold ``{value}``: the bad cell of ``cells``, shown."""
        def reason(i: int) -> str:
            text = message.replace("{value}", _shown_cell(cells.iloc[i])) if cells is not None else message
            return f"{text} in column {column!r}"

        if not mask.any():
            return
        for i in np.flatnonzero(np.asarray(mask, dtype=bool)):
            if reasons[i] is None:
                reasons[i] = reason(i)

    out = raw.copy()
    out.attrs = {}  # the reader's line numbers are _row now (an array in attrs breaks pd.concat of two batches)
    query = _by_value(raw[layout.query], _query_key)
    bad(query.isna() | (query == ""), "empty query", layout.query)
    title = None
    if layout.title is not None:
        title = _by_value(raw[layout.title], _title_text)
    if layout.product is None:
        product = pd.Series([None] * len(raw), index=raw.index)
    elif _repeats_cheaply(raw[layout.product]):
        product = _by_value(raw[layout.product], cell_text)  # as_strings's text, once per distinct value
    else:
        product = as_strings(raw[layout.product])
    product = product.where(product.notna() & (product != ""), None)
    no_id = product.isna()
    if no_id.any():
        if title is None:
            bad(no_id, "empty product id", layout.product)
        else:
            bad(no_id & title.isna(), "no product id and no title", layout.title)
            titled = no_id & title.notna()  # all of no_id, unless rows are being skipped
            product[titled] = [title_id(t) for t in title[titled]]
    if LOCALE in raw.columns and layout.product is not None:  # ESCI: ids are unique per locale only, as in the cache
        from ..serving.cache import product_key

        locale = as_strings(raw[LOCALE])
        product = pd.Series([product_key(p, loc) if has and loc else p for p, loc, has in zip(product, locale, ~no_id)],
                            index=raw.index, dtype=object)
    out["_row"] = rows
    out["_query"] = query.astype(object)
    out["_query_text"] = _by_value(raw[layout.query], _logged)
    out["_product"] = product.astype(str)
    out["_title"] = title if title is not None else None
    out["_position"] = _positive_ints(raw[layout.position], layout.position, bad)
    out["_weight"] = _weights(raw, layout, bad)
    dropped = reasons != None  # noqa: E711 (elementwise)
    if dropped.any() and skipped is None:  # every check has run: the first bad row of the batch, whatever its kind
        pos, count = first_bad(pd.Series(dropped))
        raise where.error(f"row {rows[pos]}: {reasons[pos]}{more(count)}")
    if dropped.any():
        columns = [c for c in dict.fromkeys((layout.query, layout.product, layout.title, layout.position, layout.traffic)) if c]
        part = raw[columns].iloc[np.flatnonzero(dropped)]
        cells = part.astype(object).where(part.notna(), None).itertuples(index=False, name=None)  # the log's own cells, as read
        skipped.extend((r, why, dict(zip(columns, values))) for r, why, values in zip(rows[dropped].tolist(), reasons[dropped].tolist(), cells))
        out = out[~dropped]
    return out.reset_index(drop=True)


def _shown_cell(value) -> str:
    """A bad cell as an error line shows it: "(empty)" for a missing one, not "nan"."""
    return "(empty)" if is_missing(value) else show(value)


def _query_key(value) -> str | None:
    """The query normalised as the model sees it (``train``/``predict``'s normalisation): the key
    queries are grouped by; "" when nothing is left (only spaces or invisible characters)."""
    return None if is_missing(value) else normalize_text(str(value))


def _logged(value) -> str | None:
    """The query as logged, stripped: what an output shows for a query (its first spelling)."""
    return None if is_missing(value) else str(value).strip()


def _title_text(value) -> str | None:
    """The title as logged; None when nothing is left once normalised (as for a missing one)."""
    return None if is_missing(value) or not normalize_text(str(value)) else str(value)


def _repeats_cheaply(values: pd.Series) -> bool:
    """Whether equal cells of the column are the same value: a text or integer column (not an
    object column, where 1 and 1.0 hash alike but print apart)."""
    dtype = values.dtype
    return dtype != object and (pd.api.types.is_string_dtype(dtype) or pd.api.types.is_integer_dtype(dtype))


def _by_value(values: pd.Series, text) -> pd.Series:
    """``text`` of every cell as an object Series (None where ``text`` gives None).

    Why: a result log repeats its queries on every row of a page and its products on many pages,
    and this per-cell Python was most of the reading cost; for a text or integer column ``text``
    runs once per distinct value (``pd.factorize`` finds them in C), so the result is the
    per-cell one exactly. Other columns go cell by cell."""
    if not _repeats_cheaply(values):
        return pd.Series([text(v) for v in values.tolist()], index=values.index, dtype=object)
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    mapped = np.empty(len(uniques) + 1, dtype=object)
    mapped[:-1] = [text(v) for v in uniques.tolist()]
    mapped[-1] = text(None)  # code -1: a missing cell
    return pd.Series(mapped[codes], index=values.index, dtype=object)


def _positive_ints(values: pd.Series, column: str, bad) -> np.ndarray:
    number = pd.to_numeric(values, errors="coerce")
    whole = number.notna() & (number >= 1) & (number == np.floor(number.fillna(0)))
    bad(~whole, "position {value} is not a whole number ≥ 1 (1-based)", column, values)
    return number.where(whole, 0).to_numpy(dtype=np.int64)  # 0 only where a skipped row's position was bad


def _weights(raw: pd.DataFrame, layout: LogLayout, bad) -> np.ndarray:
    column = layout.traffic
    if column is None:
        return np.ones(len(raw))
    number = pd.to_numeric(raw[column], errors="coerce")
    ok = number.notna() & (number >= 0) & np.isfinite(number.fillna(0))
    bad(~ok, column + " {value} is not a number ≥ 0", column, raw[column])
    return number.to_numpy(dtype=np.float64)


def row_hashes(batch: pd.DataFrame) -> np.ndarray:
    """A 64-bit hash of each row's own cells as the log has them (the columns ``_normalise`` adds
    left out): rows with equal hashes are exact duplicates — the same showing logged twice, or
    two showings the log has no column (a time, a session) to tell apart."""
    own = batch[[c for c in batch.columns if c not in INTERNAL]]
    cells = own.apply(lambda col: col.map(repr) if col.dtype == object else col)  # a JSON list or object cell is unhashable: its repr
    return pd.util.hash_pandas_object(cells, index=False).to_numpy()


def _first_line(e: Exception) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def normalized_queries(queries: list[str]) -> list[str]:
    """The model's text of each logged query (what is encoded)."""
    return [normalize_text(q) for q in queries]
