"""Assemble ESCI and WANDS, which ship as several files, into one table of pairs.

Why a module of its own: the public releases keep judgements and texts apart. ESCI's
``shopping_queries_dataset_examples.parquet`` has queries and labels but only product ids; the
titles are in ``shopping_queries_dataset_products.parquet`` beside it. WANDS' ``label.csv``
has only query and product ids; the texts are in ``query.csv`` and ``product.csv`` beside it
(all three tab-separated despite the name). Users may point ``--data`` at the directory, at
the judgement file, or at a table they merged themselves; this module turns the first two
into the third, keeping the judgement file's row order so errors still name its rows.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ._common import Source, as_strings, first_bad, more, show
from .readers import read_table

ESCI_EXAMPLES = "shopping_queries_dataset_examples.parquet"
ESCI_PRODUCTS = "shopping_queries_dataset_products.parquet"
WANDS_LABELS, WANDS_QUERIES, WANDS_PRODUCTS = "label.csv", "query.csv", "product.csv"


def resolve_directory(directory: Path) -> Path:
    """The judgement file inside a dataset directory (ESCI examples or WANDS ``label.csv``)."""
    for name in (ESCI_EXAMPLES, WANDS_LABELS):
        if (directory / name).is_file():
            return directory / name
    raise Source(str(directory)).error(
        f"is a directory without {ESCI_EXAMPLES} (ESCI) or {WANDS_LABELS} (WANDS); point --data at a table file"
    )


def complete(frame: pd.DataFrame, path: Path | None, fmt: str) -> pd.DataFrame:
    """``frame`` with the text columns that live in sibling files joined in, when it needs them.

    ``path`` is the file ``frame`` was read from (None for a caller's DataFrame: nothing to
    join); ``fmt`` is the requested format, so only ``auto`` and the dataset's own name join.
    """
    if path is None:
        return frame
    cols = set(frame.columns)
    if fmt in ("auto", "esci") and {"esci_label", "product_id"} <= cols and "product_title" not in cols:
        return _join_esci(frame, path)
    wands_ids = {"label", "query_id", "product_id"} <= cols
    if fmt in ("auto", "wands") and wands_ids and not {"query", "product_name"} <= cols:
        return _join_wands(frame, path)
    return frame


def _join_esci(examples: pd.DataFrame, path: Path) -> pd.DataFrame:
    products_path = path.parent / ESCI_PRODUCTS
    if not products_path.is_file():
        raise Source(str(path)).error(
            f"has no product_title column and no {ESCI_PRODUCTS} next to it; "
            f"put the products file in {path.parent} or pass a table with product_title"
        )
    keys = ["product_id"] + (["product_locale"] if "product_locale" in examples.columns else [])
    products = read_table(products_path, columns=keys + ["product_title"])
    return _join(examples, products, keys, "product_title", Source(str(path)), products_path.name)


def _join_wands(labels: pd.DataFrame, path: Path) -> pd.DataFrame:
    src = Source(str(path))
    out = labels
    for name, key, column in ((WANDS_QUERIES, "query_id", "query"), (WANDS_PRODUCTS, "product_id", "product_name")):
        if column in out.columns:
            continue
        side = path.parent / name
        if not side.is_file():
            raise src.error(f"has no {column} column and no {name} next to it; put WANDS' {name} in {path.parent}")
        out = _join(out, read_table(side, columns=[key, column]), [key], column, src, name)
    return out


def _join(left: pd.DataFrame, right: pd.DataFrame, keys: list[str], column: str, src: Source, right_name: str) -> pd.DataFrame:
    """Left-join ``right[column]`` on ``keys``; every left row must find its key."""
    left_keys = pd.DataFrame({k: as_strings(left[k]) for k in keys})
    right_keys = pd.DataFrame({k: as_strings(right[k]) for k in keys})
    right_keys[column] = right[column].to_numpy()
    right_keys = right_keys.drop_duplicates(subset=keys, keep="first")
    merged = left_keys.merge(right_keys, on=keys, how="left", validate="many_to_one", indicator=True)
    unmatched = pd.Series(merged["_merge"].to_numpy() == "left_only", index=left.index)
    if unmatched.any():
        pos, count = first_bad(unmatched)
        shown = ", ".join(f"{k} {show(left_keys[k].iloc[pos])}" for k in keys)
        raise src.error(f"{src.row(pos)}: {shown} not found in {right_name}{more(count)}")
    out = left.copy()
    out[column] = merged[column].to_numpy()
    return out
