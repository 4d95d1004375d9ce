"""Read a product catalogue: one row per product, with its id and normalised title.

Why a module of its own: the cache is built from whatever users have, which is either a plain
product table (``product_id``/``title``) or one of the public datasets, whose product columns
have their own names (ESCI ``product_id``/``product_title``, WANDS ``product_id``/
``product_name``, Home Depot ``product_uid``/``product_title``), or the pairs table a search log
gives, where each product appears once per query. All of them become the same two columns.

Titles are normalised exactly as :func:`~defectnas.data.normalize_text` does for training, so a
product encoded here gets the score ``predict_proba`` gives its title. In a table without an id
column a product's id is :func:`~defectnas.data.title_id` of its title, as in ``load_pairs``; a
row whose cell of a present id column is empty is an invalid row (refused or left out and named,
as a row without a title is), not given a hash no client knows to ask for.

A product is keyed the way its dataset keys it: ESCI's ids repeat across locales (the same
``product_id`` is one product in ``us`` and another, with a Spanish title, in ``es``), so a
table with a ``product_locale`` column is keyed by (locale, id). A key seen with two different
titles is ambiguous: no title can be chosen without possibly scoring another product than
``predict`` would, so it is refused (``invalid_rows="error"``) or left out with one warning
line naming it (``"skip"``), as are rows without a title.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from ..data import normalize_series, read_table, title_id
from ..data._common import Source, as_strings, closest, counted, first_bad, is_missing, more
from ..data.multifile import ESCI_PRODUCTS, WANDS_PRODUCTS, complete
from ..errors import DataWarning

ID_COLUMNS = ("product_id", "product_uid", "id")  # first present wins; "id" only in product tables
QUERY_COLUMNS = ("query", "search_term")  # their presence marks a pairs table, whose "id" names the pair
TITLE_COLUMNS = ("title", "product_title", "product_name")
LOCALE_COLUMN = "product_locale"  # ESCI: ids are unique per locale only
CATALOG_ATTR = "defectnas_catalog"  # DataFrame.attrs flag: already read (normalised, one row per product)
DISPLAY_TITLE = "display_title"  # the title as the catalogue writes it (case kept): for reports, never for scoring


def read_catalog(
    data: str | os.PathLike | pd.DataFrame,
    id_col: str | None = None,
    title_col: str | None = None,
    invalid_rows: str = "skip",
) -> tuple[pd.DataFrame, dict[str, int]]:
    """(catalogue, notes): columns ``product_id``, ``title`` (normalised), ``display_title`` (as written, stripped:
    for reports) [, ``product_locale``], one row per product.

    ``data`` is a table file, an ESCI or WANDS folder (its products file is read) or a
    DataFrame. Without ``id_col``/``title_col`` the first of :data:`ID_COLUMNS` /
    :data:`TITLE_COLUMNS` present is used, except that in a table of pairs (one with a query
    column) ``id`` is a pair id, so products get title ids, as ``load_pairs`` gives them. With a
    ``product_locale`` column a product is keyed by (locale, id). Rows with an empty title and
    keys seen with different titles are left out with a DataWarning line (``invalid_rows=
    "skip"``) or refused (``"error"``), as are rows with an empty cell in the id column (a table
    without an id column gets title ids). ``notes`` counts ``rows``, ``empty_titles``,
    ``empty_ids`` (rows with a title but an empty id cell) and ``duplicate_ids`` (keys left out
    because they carry different titles).
    """
    frame, src = _read(data)
    columns = [str(c) for c in frame.columns]
    title_col = _pick(title_col, TITLE_COLUMNS, columns, src, "title", "--title-col")
    if id_col is not None and id_col not in columns:
        _missing(id_col, columns, src, "--id-col")
    if id_col is None:
        pairs = any(c in columns for c in QUERY_COLUMNS)  # Home Depot's and CrowdFlower's "id" is the pair's
        id_col = next((c for c in ID_COLUMNS if c in columns and c != title_col and not (pairs and c == "id")), None)

    titles = normalize_series(frame[title_col])
    titled = titles.notna() & (titles != "")
    _leave_out(~titled, src, invalid_rows, f"empty title in column {title_col!r}", "without a title")
    if id_col:  # an empty cell of a present id column: no id a client knows would reach the product, so it is no product
        ids = as_strings(frame[id_col])
        no_id = titled & ids.map(lambda v: is_missing(v) or v == "")
        _leave_out(no_id, src, invalid_rows, f"empty product id in column {id_col!r}", f"without a product id (column {id_col!r})")
    else:  # no id column at all: ids are the titles' hashes, as load_pairs gives them
        no_id = pd.Series(False, index=frame.index)
        ids = pd.Series([title_id(t) if k else None for t, k in zip(titles, titled)], index=frame.index, dtype=object)
    keep = titled & ~no_id
    out = pd.DataFrame({"product_id": ids[keep].astype(str), "title": titles[keep].astype(str),
                        DISPLAY_TITLE: frame.loc[keep, title_col].astype(str).str.strip()})
    key = ["product_id"]
    if LOCALE_COLUMN in columns and id_col:
        out[LOCALE_COLUMN] = as_strings(frame.loc[keep, LOCALE_COLUMN]).fillna("").astype(str).to_numpy()
        key.append(LOCALE_COLUMN)
    out = out.drop_duplicates(subset=[*key, "title"])  # the same product listed again (a pairs table): one row
    ambiguous = out.duplicated(subset=key, keep=False)
    notes = {"rows": len(frame), "empty_titles": int((~titled).sum()), "empty_ids": int(no_id.sum()),
             "duplicate_ids": int(out.loc[ambiguous, key].drop_duplicates().shape[0])}
    if ambiguous.any():
        shown = ", ".join(" ".join(map(str, k)) for k in out.loc[ambiguous, key].drop_duplicates().head(5).itertuples(index=False))
        message = (f"{counted(notes['duplicate_ids'], 'product key' if len(key) > 1 else 'product id')} with different titles ({shown}"
                   f"{' …' if notes['duplicate_ids'] > 5 else ''}): ambiguous, so not cached"
                   + ("" if len(key) > 1 else "; if ids repeat per locale, add a product_locale column"))
        if invalid_rows == "error":
            raise src.error(message)
        warnings.warn(f"{src.name}: {message}", DataWarning, stacklevel=2)
    out = out[~ambiguous].reset_index(drop=True)
    if out.empty:
        raise src.error(f"no product with a title in column {title_col!r}" + (f" and an id in column {id_col!r}" if id_col else ""))
    out.attrs[CATALOG_ATTR] = True  # build_cache need not read it again
    return out, notes


def _leave_out(bad: pd.Series, src: Source, invalid_rows: str, error: str, warning: str) -> None:
    """Refuse the rows flagged in ``bad`` in one line naming the first (``invalid_rows="error"``), or
    warn in one line naming them (``"skip"``; the caller leaves them out): nothing is dropped silently."""
    if not bad.any():
        return
    pos, count = first_bad(bad)
    if invalid_rows == "error":
        raise src.error(f"{src.row(pos)}: {error}{more(count)} (--invalid-rows skip leaves such rows out)")
    shown = ", ".join(src.row(int(p)) for p in np.flatnonzero(bad.to_numpy())[:10])
    warnings.warn(f"{src.name}: {counted(count, 'row')} {warning} left out: {shown}{' …' if count > 10 else ''}", DataWarning, stacklevel=3)


def title_hash(title: str) -> str:
    """SHA-1 of a normalised title: what decides whether a cached product must be re-encoded."""
    return hashlib.sha1(title.encode("utf-8")).hexdigest()


def _read(data: str | os.PathLike | pd.DataFrame) -> tuple[pd.DataFrame, Source]:
    if isinstance(data, pd.DataFrame):
        if len(data) == 0:
            raise Source("<DataFrame>").error("table has no rows")
        frame = data.reset_index(drop=True)
        frame.columns = [str(c) for c in frame.columns]
        return frame, Source("<DataFrame>")
    path = Path(data)
    if path.is_dir():
        for name in (ESCI_PRODUCTS, WANDS_PRODUCTS):
            if (path / name).is_file():
                path = path / name
                break
        else:
            raise Source(str(path)).error(f"is a directory without {ESCI_PRODUCTS} (ESCI) or {WANDS_PRODUCTS} (WANDS); point --catalog at a table file")
    # an ESCI examples file or WANDS label.csv gets its titles joined from the files beside it
    return complete(read_table(path), path, "auto"), Source(str(path))


def _pick(given: str | None, candidates: tuple[str, ...], columns: list[str], src: Source, what: str, flag: str) -> str:
    if given is not None:
        if given not in columns:
            _missing(given, columns, src, flag)
        return given
    for c in candidates:
        if c in columns:
            return c
    raise src.error(f"no {what} column ({', '.join(candidates)}); name it with {flag}; columns present: {', '.join(columns)}")


def _missing(name: str, columns: list[str], src: Source, flag: str) -> None:
    guess = closest(name, columns)
    hint = f" (did you mean {guess!r}?)" if guess else ""
    raise src.error(f"no column {name!r} ({flag}){hint}; columns present: {', '.join(columns)}")
