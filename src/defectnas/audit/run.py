"""``run_audit``: a result log (and optionally a baseline log) → scored.parquet, queries.csv,
summary.json, report.html.

Why a module of its own: it is the one loop of the audit, read top to bottom — resolve the
product encodings (a cache, or a catalogue encoded into a temporary cache; a catalogue beside
a cache only titles products), stream the log in batches, encode each batch's new queries
together, score its pairs not scored before in this run (in chunks, locally or on Ray), append
the scored rows to a temporary ``scored.parquet`` and fold them into per-query, per-position
and per-group sums, then compute every table and write them all at once. Memory is bounded by
the batch (``batch_rows`` log rows and their scores), the scorer's store of query encodings
(:data:`.score.QUERY_CACHE_BYTES`), the sums (one row per query, per position and per group ×
query), the list of missing products and :mod:`.memo`'s 16 bytes per distinct pair and per
distinct row. The baseline comparison is :mod:`.baseline`.
"""

from __future__ import annotations

import contextlib
import math
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pandas as pd

from ..data._common import counted
from ..errors import ConfigError, DataError, DataWarning
from ..storage import atomic_write_json, atomic_write_text, not_a_model_directory, read_json
from . import rates
from .log import INTERNAL, LogLayout, _title_text, iter_log, log_layout, row_hashes
from .memo import PairScores, RowRepeats
from .score import ChunkScorer, LocalExecutor, RayExecutor, chunks

SCORED, QUERIES, SUMMARY, REPORT = "scored.parquet", "queries.csv", "summary.json", "report.html"
MISSING, CHANGES, BASELINE_DIR = "missing_products.csv", "changes.csv", "baseline"
SKIPPED = "skipped_rows.csv"  # --invalid-rows skip: source row, reason and the log's cells of each row left out
# columns scored.parquet adds to the log's: the scores, and the fields as the audit read them (the query normalised as
# queries.csv keys it, the product key, the position as a whole number), which later steps read instead of the log's own cells
ADDED = ("defect_probability", "is_defect", "product_missing", "product_key", "query_key", "shown_at")
WORST = 20  # worst queries (and queries that got worse) listed in summary.json and the report


@dataclass
class AuditConfig:
    """What ``defectnas audit`` was asked to do (flags map onto fields)."""

    model: str  # model directory
    log: str  # result log
    out: str  # output directory
    cache: str | None = None  # product cache built with this model (defectnas cache)
    catalog: str | None = None  # or a product catalogue, encoded into a temporary cache
    by: list[str] = field(default_factory=list)  # grouping columns of the log (one summary per value)
    baseline_log: str | None = None  # the log before a change, audited with the same model
    ray_address: str | None = None  # score chunks on Ray actors (auto, local, ray://host:port)
    batch_rows: int = 200_000  # log rows read and held at once (a batch's new queries are encoded together)
    chunk_rows: int = 32_768  # rows per scoring chunk (whole queries; the unit sent to a worker; its queries are encoded together)
    score_batch: int = 2_048  # pairs per pass of the score head
    threads: int = 0  # torch threads of the local scorer (0: torch's default); Ray actors use 1
    query_col: str | None = None  # log columns, when not found by name
    id_col: str | None = None
    title_col: str | None = None
    position_col: str | None = None
    seed: int = 0  # bootstrap seed
    quiet: bool = False  # no progress bar
    invalid_rows: str = "error"  # a row with a bad cell: "error" (one line naming it) or "skip" (left out, listed in skipped_rows.csv)

    def __post_init__(self) -> None:
        if self.invalid_rows not in ("error", "skip"):
            raise ConfigError(f"--invalid-rows must be error or skip, got {self.invalid_rows!r}")


@dataclass
class LogAudit:
    """What one log's pass produced (kept for the report and the baseline comparison)."""

    path: str
    layout: LogLayout
    queries: pd.DataFrame  # per-query sums (rates.SUMS), keyed by _query
    positions: pd.DataFrame  # per-position sums, keyed by _position
    groups: dict[str, pd.DataFrame]  # column → sums keyed by [column, _query]
    missing: dict[str, int]  # product key → rows whose product is neither cached nor titled
    rows: int
    seconds: float
    skipped: list[tuple[int, str, dict]] = field(default_factory=list)  # (source row, reason, cells) of rows left out (--invalid-rows skip)
    out: Path | None = None  # the folder of its outputs
    scored: "_ParquetAppender | None" = None  # its scored rows, in a temporary file until keep()
    table: pd.DataFrame | None = None  # queries.csv's rows (write_outputs)

    @property
    def scored_path(self) -> Path:
        """Where the scored rows are now: the temporary file until :meth:`keep`, then scored.parquet."""
        return self.scored.tmp if self.scored.tmp.exists() else self.scored.path

    def keep(self) -> None:
        """Put the scored rows in place as scored.parquet."""
        self.scored.commit()

    def discard(self) -> None:
        """Remove the temporary scored rows (the run stopped before its outputs were written)."""
        self.scored.abort()


def run_audit(cfg: AuditConfig, echo: Callable[[str], None] = lambda m: None) -> dict:
    """Audit ``cfg.log`` (and ``cfg.baseline_log``) into ``cfg.out``; returns summary.json's dict."""
    if cfg.cache is None and cfg.catalog is None and log_layout(cfg.log, cfg.query_col, cfg.id_col, cfg.title_col,
                                                                cfg.position_col).title is None:  # a titled log needs neither
        raise ConfigError(f"{cfg.log} has product ids but no titles: give --cache DIR (a product cache of this model) or "
                          "--catalog PATH (or both: the cache scores, the catalogue names the products)")
    for name in ("batch_rows", "chunk_rows", "score_batch"):
        if getattr(cfg, name) < 1:
            raise ConfigError(f"{name} must be at least 1")
    out = Path(cfg.out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out}: exists and is not a directory")
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    try:
        return _run_audit(cfg, out, echo)
    except BaseException:
        if created:  # a run that stopped on an error leaves no empty --out folder behind (what it wrote, e.g. skipped_rows.csv, stays)
            _remove_empty_folders(out)
        raise


def _remove_empty_folders(folder: Path) -> None:
    """Remove ``folder`` and the folders under it that hold no file."""
    for sub in sorted((p for p in folder.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True) + [folder]:
        with contextlib.suppress(OSError):
            sub.rmdir()  # only succeeds when empty


def _run_audit(cfg: AuditConfig, out: Path, echo: Callable[[str], None]) -> dict:
    """Score, then compute every output in memory, then write them all (:func:`_commit`).

    Why in that order: a run that stops after scoring — on an error in the tables or the report —
    must not leave a new scored.parquet beside an earlier run's summary.json, or a queries.csv
    without its summary. Until the commit the scored rows are in temporary files beside their
    final names, and they are removed when the run stops."""
    from ..serving.catalog import read_catalog

    decision = _decision(cfg.model)
    titles: dict[str, str] = {}
    memo = PairScores()  # shared by both logs: a pair shown in both scores the same in both
    new = old = None
    try:
        with tempfile.TemporaryDirectory(prefix="defectnas-audit-") as tmp:
            cache_dir = cfg.cache
            if cfg.catalog is not None:
                from ..serving.cache import build_cache

                catalog, notes = read_catalog(cfg.catalog)
                titles = catalog_titles(catalog)
                if cache_dir is None:
                    echo(f"{cfg.catalog}: {len(catalog)} products; encoding them into a temporary cache")
                    build_cache(cfg.model, catalog, Path(tmp) / "cache", quiet=cfg.quiet, dtype="float32")  # thrown away after: kept exact
                    cache_dir = str(Path(tmp) / "cache")
                else:
                    echo(f"{cfg.catalog}: {len(catalog)} products; titles for the report (and for products the cache lacks)")
            executor = _executor(cfg, cache_dir)
            try:
                new = audit_log(cfg.log, out, executor, decision, cfg, echo, titles, memo)
                if cfg.baseline_log:
                    old = audit_log(cfg.baseline_log, out / BASELINE_DIR, executor, decision, cfg, echo, titles, memo)
            finally:
                executor.shutdown()
        _require_scored(new, out)
        if old is not None:
            _require_scored(old, out / BASELINE_DIR)
        files: dict[Path, str] = {}  # every output but scored.parquet and summary.json, in the order they are written
        summary = write_outputs(new, out, decision, cfg, titles, files)
        if old is not None:
            files[out / BASELINE_DIR / SUMMARY] = _json_text(write_outputs(old, out / BASELINE_DIR, decision, cfg, titles, files))
            from .baseline import compare_logs

            summary["baseline"] = compare_logs(new, old, out, cfg, files)
            summary["baseline"]["skipped_rows"] = {"rows": len(old.skipped), "file": f"{BASELINE_DIR}/{SKIPPED}" if old.skipped else None}
        summary = _clean(summary)
        from .report import write_report

        write_report(out, summary, new.table, files)
    except BaseException:
        for audit in (new, old):
            if audit is not None:
                audit.discard()
        if (out / BASELINE_DIR).is_dir():
            _remove_empty_folders(out / BASELINE_DIR)  # only if nothing (of an earlier run) is in it
        raise
    _commit(out, new, old, files, summary)
    return summary


def _commit(out: Path, new: "LogAudit", old: "LogAudit | None", files: dict[Path, str], summary: dict) -> None:
    """Put every output in place: the scored rows (renamed), the tables, report.html, then
    summary.json last (a summary.json newer than the run's start means the run is complete);
    outputs of an earlier run in the same folder that this run does not rewrite are removed."""
    import shutil

    new.keep()
    if old is not None:
        old.keep()
    for path, text in files.items():
        atomic_write_text(path, text)
    for folder in [out] + ([out / BASELINE_DIR] if old is not None else []):
        for name in (MISSING, SKIPPED):
            if folder / name not in files:
                (folder / name).unlink(missing_ok=True)
    if old is None:
        (out / CHANGES).unlink(missing_ok=True)
        shutil.rmtree(out / BASELINE_DIR, ignore_errors=True)
    atomic_write_json(out / SUMMARY, summary)


def _json_text(obj) -> str:
    """Text of a JSON file, as ``atomic_write_json`` writes one."""
    import json

    return json.dumps(_clean(obj), indent=2) + "\n"


def _require_scored(audit: LogAudit, out: Path) -> None:
    """A log of which nothing could be scored is an error (exit 2), not a report of NaN rates.

    Raises :class:`DataError` naming the log: it had no rows, or every product it shows is
    missing from the cache/catalogue (the list is written to ``out/missing_products.csv``)."""
    if audit.rows == 0:
        raise DataError(f"{audit.path}: no shown results (no rows after the header)")
    if sum(audit.missing.values()) >= audit.rows:
        atomic_write_text(out / MISSING, missing_frame(audit.missing).to_csv(index=False))
        shown = ", ".join(k.replace("\x1f", ":") for k in list(audit.missing)[:3])
        raise DataError(f"{audit.path}: none of its {audit.rows} shown results could be scored: all {len(audit.missing)} products "
                        f"are missing from the cache/catalogue (e.g. {shown}; all in {out / MISSING})")


# ------------------------------------------------------------- one log's pass
def audit_log(path: str, out: Path, executor, decision: dict, cfg: AuditConfig, echo: Callable[[str], None],
              titles: dict[str, str] | None = None, memo: PairScores | None = None) -> LogAudit:
    """Score every row of the log at ``path`` into a temporary file beside ``out/scored.parquet``
    (put in place by :meth:`LogAudit.keep`); return the sums. ``titles`` (product key → title,
    from a catalogue) titles rows the log leaves untitled, so a product the cache lacks is
    encoded on the fly rather than counted missing. ``memo``: the pairs this run scored before
    (the other log's too), whose probabilities are reused."""
    from ..progress import progress

    start = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    memo = PairScores() if memo is None else memo
    by = tuple(cfg.by)
    acc_q = rates.Accumulator(["_query"], firsts=("_query_text",))
    acc_p = rates.Accumulator(["_position"])
    acc_g = {c: rates.Accumulator([c, "_query"]) for c in by}
    missing: dict[str, int] = {}
    repeats = RowRepeats()
    layout = None
    rows = 0
    writer = _ParquetAppender(out / SCORED)
    skipped: list[tuple[int, str, dict]] | None = [] if cfg.invalid_rows == "skip" else None
    batches = _whole_queries(iter_log(path, cfg.batch_rows, by, cfg.query_col, cfg.id_col, cfg.title_col, cfg.position_col, skipped))
    try:
        with progress(total=_row_count(path), quiet=cfg.quiet, unit=" pairs", desc=f"auditing {Path(path).name}") as bar:
            for batch, layout in batches:
                if titles:
                    untitled = batch["_title"].isna()
                    if untitled.any():
                        batch.loc[untitled, "_title"] = batch.loc[untitled, "_product"].map(titles)
                repeats.add(row_hashes(batch), batch["_row"].to_numpy())
                probs = _probabilities(batch, executor, memo, cfg.chunk_rows)
                flagged = probs >= _thresholds(batch, decision)
                sums = rates.row_sums(probs, flagged, batch["_position"].to_numpy(), batch["_weight"].to_numpy())
                acc_q.add(sums.assign(_query=batch["_query"].to_numpy(), _query_text=batch["_query_text"].to_numpy()))
                acc_p.add(sums.assign(_position=batch["_position"].to_numpy()))
                for c in by:
                    acc_g[c].add(sums.assign(**{c: _group_values(batch[c]), "_query": batch["_query"].to_numpy()}))
                gone = np.isnan(probs)
                for key in batch["_product"].to_numpy()[gone]:
                    missing[key] = missing.get(key, 0) + 1
                writer.add(_scored_frame(batch, probs, flagged, gone), path)
                rows += len(batch)
                bar.update(len(batch))
        writer.close()
    except BaseException:
        writer.abort()
        raise
    seconds = time.perf_counter() - start
    if skipped:  # a warning, not progress: --quiet does not hide rows left out
        warnings.warn(f"{path}: {len(skipped)} rows with a bad cell left out (--invalid-rows skip), e.g. row {skipped[0][0]}: "
                      f"{skipped[0][1]} (all in {out / SKIPPED})", DataWarning, stacklevel=2)
    if repeats.count:  # counted as every row is (one showing each), but said: a showing logged twice would be counted twice
        more = repeats.count - len(repeats.first)
        warnings.warn(f"{path}: {counted(repeats.count, 'row')} {'repeats' if repeats.count == 1 else 'repeat'} an earlier row in every cell "
                      f"(row{'s' if repeats.count > 1 else ''} {', '.join(map(str, repeats.first))}{f' and {more} more' if more else ''}); "
                      "each counts as one more showing — drop them if a showing was logged twice", DataWarning, stacklevel=2)
    if skipped and not rows:
        writer.abort()
        atomic_write_text(out / SKIPPED, skipped_frame(skipped).to_csv(index=False))
        raise DataError(f"{path}: no row could be audited: all {len(skipped)} rows have a bad cell (listed in {out / SKIPPED})")
    if missing:
        echo(f"{path}: {sum(missing.values())} rows name {len(missing)} products missing from the catalogue (listed in {out / MISSING})")
    echo(f"{path}: {rows} shown pairs scored in {seconds:.1f} s ({rows / max(seconds, 1e-9):.0f} pairs/s)")
    return LogAudit(str(path), layout, acc_q.result(), acc_p.result(), {c: a.result() for c, a in acc_g.items()}, missing, rows, seconds,
                    skipped or [], out=out, scored=writer)


def _probabilities(batch: pd.DataFrame, executor, memo: PairScores, chunk_rows: int) -> np.ndarray:
    """The defect probability of each row of a batch: a pair this run scored before (in this log
    or the other) keeps its probability; each distinct new pair is scored once, in chunks of whole
    queries, and remembered.

    Why: the head's float rounding depends on which pairs share a batch, so the same pair scored
    twice can differ by ~1e-8; scored once, an unchanged page has the same probabilities in both
    logs (a change of exactly 0), and a page repeated on many days costs the head one pass."""
    codes = memo.codes(batch["_query"], batch["_product"], batch["_title"])
    found, probs = memo.get(codes)
    todo = np.flatnonzero(~found)
    if not len(todo):
        return probs
    first = todo[~pd.Series(codes[todo]).duplicated().to_numpy()]  # the first row of each new pair, in log order
    queries, products, titles = (batch[c].to_numpy()[first] for c in ("_query_text", "_product", "_title"))
    executor.prepare(pd.unique(queries))  # the batch's new queries through the query tower together
    parts = chunks(pd.DataFrame({"_query": batch["_query"].to_numpy()[first]}), chunk_rows)
    payloads = ((queries[idx].tolist(), products[idx].tolist(), titles[idx].tolist()) for idx in parts)
    scored = np.full(len(first), np.nan)
    for idx, p in zip(parts, executor.map(payloads)):
        scored[idx] = p
    memo.add(codes[first], scored)
    return memo.get(codes)[1]


def _whole_queries(batches: Iterator[tuple[pd.DataFrame, LogLayout]]) -> Iterator[tuple[pd.DataFrame, LogLayout]]:
    """Batches where the rows of the last query of a batch move to the next one, so a log whose
    rows of a query are adjacent never has a query cut in two (and encoded twice)."""
    held = None
    for batch, layout in batches:
        if held is not None:
            batch = pd.concat([held, batch], ignore_index=True)
            held = None
        q = batch["_query"].to_numpy()
        tail = len(batch)
        while tail > 0 and q[tail - 1] == q[-1]:
            tail -= 1
        if tail > 0:
            held = batch.iloc[tail:].reset_index(drop=True)
            batch = batch.iloc[:tail].reset_index(drop=True)
        yield batch, layout
    if held is not None:
        yield held, layout


def _scored_frame(batch: pd.DataFrame, probs: np.ndarray, flagged: np.ndarray, gone: np.ndarray) -> pd.DataFrame:
    frame = batch.drop(columns=[c for c in INTERNAL if c in batch.columns])
    frame = frame.drop(columns=[c for c in ADDED if c in frame.columns])
    frame["defect_probability"] = probs
    frame["is_defect"] = pd.array(np.where(gone, None, flagged), dtype="boolean")
    frame["product_missing"] = gone
    frame["product_key"] = batch["_product"].to_numpy()
    frame["query_key"] = batch["_query"].to_numpy()
    frame["shown_at"] = batch["_position"].to_numpy(dtype=np.int64)
    return frame


def _group_values(values: pd.Series) -> np.ndarray:
    return np.asarray(["(missing)" if v is None or (isinstance(v, float) and v != v) else str(v) for v in values.tolist()], dtype=object)


class _ParquetAppender:
    """scored.parquet written batch by batch under a temporary name (:meth:`close`), renamed into
    place by :meth:`commit` when every other output is ready too, or removed by :meth:`abort`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.tmp = path.with_name(f".{path.name}.tmp")
        self.writer = None
        self.schema = None

    def add(self, frame: pd.DataFrame, source: str) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if self.writer is None:
            table = pa.Table.from_pandas(frame, preserve_index=False)
            self.schema = table.schema
            self.writer = pq.ParquetWriter(self.tmp, self.schema)
        else:
            try:
                table = pa.Table.from_pandas(frame, preserve_index=False).cast(self.schema)
            except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, ValueError) as e:
                raise DataError(f"{source}: a column changes type between rows ({' '.join(str(e).split())[:200]})") from None
        self.writer.write_table(table)

    def close(self) -> None:
        import os

        if self.writer is not None:
            self.writer.close()
            self.writer = None
            with open(self.tmp, "rb") as f:
                os.fsync(f.fileno())

    def commit(self) -> None:
        import os

        if self.tmp.exists():
            os.replace(self.tmp, self.path)

    def abort(self) -> None:
        if self.writer is not None:
            try:
                self.writer.close()
            except Exception:
                pass
            self.writer = None
        self.tmp.unlink(missing_ok=True)


def _row_count(path: str) -> int | None:
    """Rows of a plain Parquet log (from its footer), for the progress bar; else None."""
    if str(path).lower().endswith((".parquet", ".pq")):
        try:
            import pyarrow.parquet as pq

            return pq.ParquetFile(path).metadata.num_rows
        except Exception:
            return None
    return None


# ------------------------------------------------------------ model decision
def _decision(model_dir: str) -> dict:
    """The model's threshold (and per-group thresholds) from config.json, without loading weights."""
    path = Path(model_dir) / "config.json"
    config = read_json(path, DataError, not_a_model_directory(model_dir))
    if config.get("model_type", "two-tower") != "two-tower":
        raise ConfigError(f"{model_dir}: a {config.get('model_type')!r} model; audit scores with two-tower models (train, search), "
                          "whose products can be cached")
    return {"threshold": float(config["threshold"]), "groups": config.get("group_thresholds")}


def skipped_frame(skipped: list[tuple[int, str, dict]]) -> pd.DataFrame:
    """skipped_rows.csv: the data row (1-based, header excluded), why, and the row's own cells of
    the log's query, product, title, position and traffic columns, so it can be fixed from the list."""
    return pd.DataFrame([{"row": r, "reason": why, **cells} for r, why, cells in skipped])


def _thresholds(batch: pd.DataFrame, decision: dict):
    groups = decision["groups"]
    if groups and groups.get("column") in batch.columns:
        from ..thresholds import apply_group_thresholds

        return apply_group_thresholds(batch[groups["column"]], groups, decision["threshold"])
    return decision["threshold"]


def _executor(cfg: AuditConfig, cache_dir: str):
    if cfg.ray_address:
        return RayExecutor(cfg.ray_address, cfg.model, cache_dir, threads=1, score_batch=cfg.score_batch)
    return LocalExecutor(ChunkScorer(cfg.model, cache_dir, threads=cfg.threads, score_batch=cfg.score_batch))


# -------------------------------------------------------------------- outputs
def write_outputs(audit: LogAudit, out: Path, decision: dict, cfg: AuditConfig, titles: dict[str, str], files: dict[Path, str]) -> dict:
    """queries.csv, missing_products.csv and skipped_rows.csv (when any) of one log into ``files``
    (path → text, written once every output is ready); returns summary.json's dict."""
    has_traffic = audit.layout.traffic is not None
    table = audit.table = rates.query_table(audit.queries, has_traffic)
    files[out / QUERIES] = table.to_csv(index=False)
    missing = {k.replace("\x1f", ":"): v for k, v in audit.missing.items()}  # (locale, id) keys shown as locale:id
    if missing:
        files[out / MISSING] = missing_frame(audit.missing).to_csv(index=False)
    if audit.skipped:
        files[out / SKIPPED] = skipped_frame(audit.skipped).to_csv(index=False)
    positions = rates.position_table(audit.positions)
    return {
        "log": str(audit.path),
        "model": str(cfg.model),
        "products": {"cache": cfg.cache} if cfg.cache else {"catalog": cfg.catalog},
        "rows": audit.rows,
        "threshold": decision["threshold"],
        "per_group_thresholds": (decision["groups"] or {}).get("column"),
        "traffic": audit.layout.traffic,
        "overall": rates.rates_summary(audit.queries, cfg.seed),
        "by": {c: rates.group_summaries(audit.groups[c], c, cfg.seed) for c in cfg.by},
        "positions": positions[positions["position"] <= 50].to_dict("records"),
        "missing_products": {"rows": int(sum(missing.values())), "products": len(missing), "file": MISSING if missing else None,
                             "most_rows": [{"product_key": k, "rows": v} for k, v in
                                           sorted(missing.items(), key=lambda kv: (-kv[1], kv[0]))[:WORST]]},
        "rows_in_log": audit.rows + len(audit.skipped),  # rows: those scored; the rest were skipped (--invalid-rows skip)
        "skipped_rows": {"rows": len(audit.skipped), "file": SKIPPED if audit.skipped else None,
                         "first": [{"row": r, "reason": why} for r, why, _ in audit.skipped[:WORST]]},
        "worst_queries": worst_queries(table, audit.scored_path, audit.layout, titles),
        "methods": {
            "rates": "expected defect rates from calibrated probabilities (expected defects = sum of defect_probability); "
                     "at_threshold = share of pairs with is_defect; products missing from the catalogue are excluded and counted",
            "queries": "grouped by their normalised text (as train and predict normalise it: case, full-width and invisible "
                       "characters folded); each shown as the log first spelt it",
            "position_weights": "DCG: 1 / log2(1 + position)",
            "traffic_weights": f"per row: {audit.layout.traffic or '1 (the log has no impressions or count column)'}",
            "interval_overall": f"95% Poisson bootstrap over queries, {rates.BOOTSTRAP} resamples, seed {cfg.seed}, percentile",
            "interval_query": "95% normal approximation of the Poisson-binomial defect count: sum p ± 1.96·sqrt(sum p(1-p)), over n",
        },
        "seconds": round(audit.seconds, 3),
        "pairs_per_second": round(audit.rows / audit.seconds, 1) if audit.seconds > 0 else None,
    }


def missing_frame(missing: dict[str, int]) -> pd.DataFrame:
    """missing_products.csv: each missing product's key ((locale, id) keys as locale:id) and rows, most rows first."""
    shown = {k.replace("\x1f", ":"): v for k, v in missing.items()}
    return pd.DataFrame(sorted(shown.items(), key=lambda kv: (-kv[1], kv[0])), columns=["product_key", "rows"])


def worst_queries(table: pd.DataFrame, scored: Path, layout: LogLayout, titles: dict[str, str], n: int = WORST,
                  products: int = 5) -> list[dict]:
    """The ``n`` worst queries, each with its ``products`` likeliest defects (from a filtered read of
    scored.parquet). Ranked by the lower end of the rate's 95% interval — the rate a query at
    least has — then by the rate and traffic, so pages of one or two results (interval [0, 1])
    do not crowd out queries that are surely bad.

    Reads the fields as the audit read them (``query_key``, ``shown_at``), never the log's own
    cells again: a CSV log's position "2.0" or " 3 " passed the check as 2 and 3, and converting
    the raw text a second time is where a run that had scored everything used to crash."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    top = table[table["shown"] > 0].sort_values(["rate_low", "defect_rate", "traffic", "query_key"],
                                                ascending=[False, False, False, True], kind="stable").head(n)
    if top.empty:
        return []
    columns = ["query_key", "product_key", "defect_probability", "is_defect", "shown_at"] + ([layout.title] if layout.title else [])
    data = pq.read_table(scored, columns=list(dict.fromkeys(columns)),
                         filters=pc.field("query_key").isin(top["query_key"].tolist())).to_pandas()
    out = []
    for row in top.itertuples(index=False):
        rows = data[(data["query_key"] == row.query_key) & data["defect_probability"].notna()].nlargest(products, "defect_probability")
        out.append({
            "query": row.query, "query_key": row.query_key, "shown": int(row.shown), "defect_rate": float(row.defect_rate),
            "rate_low": float(row.rate_low), "rate_high": float(row.rate_high), "expected_defects": float(row.expected_defects),
            "flagged": int(row.flagged), "traffic": None if pd.isna(row.traffic) else float(row.traffic),
            "defect_products": [{
                "product_key": str(r["product_key"]).replace("\x1f", ":"),  # (locale, id) keys shown as locale:id, as in missing_products
                "title": (_title_text(r[layout.title]) if layout.title else None) or titles.get(str(r["product_key"])),
                "position": int(r["shown_at"]),
                "defect_probability": float(r["defect_probability"]),
                "is_defect": bool(r["is_defect"]),
            } for _, r in rows.iterrows()],
        })
    return out


def catalog_titles(catalog: pd.DataFrame) -> dict[str, str]:
    """Product key → title of a catalogue (``read_catalog``'s frame), keyed as the log's rows key
    their products: by id, and with locales by (locale, id) too — a bare id only where one
    locale has it."""
    names = catalog["display_title" if "display_title" in catalog.columns else "title"].tolist()  # as the catalogue writes them
    ids = catalog["product_id"].astype(str).tolist()
    if "product_locale" not in catalog.columns:
        return dict(zip(ids, names))
    from ..serving.cache import product_key

    locales = catalog["product_locale"].astype(str).tolist()
    titles = {product_key(i, loc): t for i, loc, t in zip(ids, locales, names)}
    counts = pd.Series(ids).value_counts()
    titles.update((i, t) for i, t in zip(ids, names) if counts[i] == 1)
    return titles


def _clean(obj):
    """JSON-safe: NaN/inf → None, numpy scalars → Python."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating, float)):
        return None if not math.isfinite(float(obj)) else float(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj
