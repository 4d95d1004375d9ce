"""read_catalog: product tables and the public datasets' layouts become (product_id, title)."""

from __future__ import annotations

import pandas as pd
import pytest

from defectnas.data import title_id
from defectnas.errors import DataError, DataWarning
from defectnas.serving.catalog import read_catalog


def test_plain_product_table_normalises_titles(tmp_path):
    path = tmp_path / "p.csv"
    pd.DataFrame({"product_id": ["007", "8"], "title": ["  Drill   BIT ", "Ｈｏｓｅ"]}).to_csv(path, index=False)
    cat, notes = read_catalog(path)
    assert cat.to_dict("list") == {"product_id": ["007", "8"], "title": ["drill bit", "hose"],
                                   "display_title": ["Drill   BIT", "Ｈｏｓｅ"]}  # as written, for reports only
    assert notes == {"rows": 2, "empty_titles": 0, "empty_ids": 0, "duplicate_ids": 0}


def test_homedepot_pairs_use_product_uid_not_the_pair_id_and_dedupe():
    df = pd.DataFrame({"id": [2, 3, 9], "product_uid": [100001, 100001, 100002],
                       "product_title": ["Angle", "Angle", "Deck Over"], "search_term": ["a", "b", "c"], "relevance": [3, 2, 1]})
    cat, notes = read_catalog(df)
    assert cat.to_dict("list") == {"product_id": ["100001", "100002"], "title": ["angle", "deck over"],
                                   "display_title": ["Angle", "Deck Over"]}
    assert notes["duplicate_ids"] == 0


def test_crowdflower_pairs_get_the_same_title_ids_as_load_pairs():
    from defectnas.data import load_pairs

    df = pd.DataFrame({"id": [1, 2, 3], "query": ["a", "b", "c"], "product_title": ["Hose", "Rug", "Hose"], "median_relevance": [1, 4, 2]})
    cat, _ = read_catalog(df)
    assert cat["product_id"].tolist() == [title_id("Hose"), title_id("Rug")]
    assert set(cat["product_id"]) == set(load_pairs(df)["product_id"])
    assert read_catalog(pd.DataFrame({"id": [7], "title": ["Hose"]}))[0]["product_id"].tolist() == ["7"]  # a product table's id


def test_wands_products_and_an_esci_folder(tmp_path):
    wands = pd.DataFrame({"product_id": [10, 11], "product_name": ["salon chair", "floral rug"], "product_class": ["x", "y"]})
    cat, _ = read_catalog(wands)
    assert cat["title"].tolist() == ["salon chair", "floral rug"]
    pd.DataFrame({"product_id": ["B1", "B2", "B1"], "product_title": ["Bits", None, "Brocas"],
                  "product_locale": ["us", "us", "es"]}).to_parquet(tmp_path / "shopping_queries_dataset_products.parquet")
    with pytest.warns(DataWarning, match=r"1 row without a title left out: row 2$"):  # one row: "row", not "rows"
        cat, notes = read_catalog(tmp_path)  # ESCI ids repeat per locale: keyed by (locale, id), the Spanish title kept
    assert cat.to_dict("list") == {"product_id": ["B1", "B1"], "title": ["bits", "brocas"], "display_title": ["Bits", "Brocas"],
                                   "product_locale": ["us", "es"]}
    assert notes == {"rows": 3, "empty_titles": 1, "empty_ids": 0, "duplicate_ids": 0}


def test_no_id_column_gives_title_ids_and_columns_can_be_named():
    cat, _ = read_catalog(pd.DataFrame({"name": ["Garden Hose"]}), title_col="name")
    assert cat["product_id"].tolist() == [title_id("Garden Hose")]
    cat, _ = read_catalog(pd.DataFrame({"sku": ["s1"], "name": ["Hose"]}), id_col="sku", title_col="name")
    assert cat["product_id"].tolist() == ["s1"]


def test_a_product_listed_twice_in_other_case_is_one_product_shown_as_first_written():
    df = pd.DataFrame({"product_id": ["1", "1", "2"], "title": ["Cordless Drill", "cordless  DRILL", "Hose"]})
    cat, notes = read_catalog(df)
    assert cat.to_dict("list") == {"product_id": ["1", "2"], "title": ["cordless drill", "hose"], "display_title": ["Cordless Drill", "Hose"]}
    assert notes["duplicate_ids"] == 0  # the same normalised title: not ambiguous


def test_missing_columns_are_one_line_errors():
    with pytest.raises(DataError, match="no title column .*--title-col"):
        read_catalog(pd.DataFrame({"product_id": [1], "name": ["x"]}))
    with pytest.raises(DataError, match="did you mean 'name'"):
        read_catalog(pd.DataFrame({"product_id": [1], "name": ["x"]}), title_col="Name")
    with pytest.raises(DataError, match="no product with a title"):
        read_catalog(pd.DataFrame({"title": ["", None]}))


@pytest.mark.parametrize("suffix", ["csv", "parquet"])
def test_an_empty_id_cell_is_an_invalid_row_not_a_title_hash(tmp_path, suffix):
    """A trial's catalogue row with an empty id (CSV) or NaN id (Parquet) silently got a title hash
    no client would ask for; the hash is for a table without an id column only."""
    table = pd.DataFrame({"product_id": [9000001, None, 9000003, float("nan")],
                          "title": ["Cordless Drill 20V", "Orphan title without id", "Garden Hose", None]})
    path = tmp_path / f"cat.{suffix}"
    table.to_csv(path, index=False) if suffix == "csv" else table.to_parquet(path)
    with pytest.warns(DataWarning) as caught:
        cat, notes = read_catalog(path)
    messages = [str(w.message) for w in caught]
    assert f"{path}: 1 row without a product id (column 'product_id') left out: row 2" in messages
    assert f"{path}: 1 row without a title left out: row 4" in messages  # counted once, as a row without a title
    assert cat["product_id"].tolist() == ["9000001", "9000003"] and title_id("Orphan title without id") not in set(cat["product_id"])
    assert notes == {"rows": 4, "empty_titles": 1, "empty_ids": 1, "duplicate_ids": 0}
    table.iloc[:3].to_csv(path, index=False) if suffix == "csv" else table.iloc[:3].to_parquet(path)
    with pytest.raises(DataError, match=r"cat\.\w+: row 2: empty product id in column 'product_id' \(--invalid-rows skip leaves such rows out\)$"):
        read_catalog(path, invalid_rows="error")


def test_blank_ids_are_named_in_one_line_and_a_table_of_them_only_is_refused():
    table = pd.DataFrame({"sku": ["1", " ", None], "title": ["drill", "hose", "rug"]})
    with pytest.raises(DataError, match=r"^<DataFrame>: row 2: empty product id in column 'sku' \(and 1 more row\)"):
        read_catalog(table, id_col="sku", invalid_rows="error")
    with pytest.warns(DataWarning, match=r"2 rows without a product id \(column 'sku'\) left out: row 2, row 3$"):
        assert read_catalog(table, id_col="sku")[0]["product_id"].tolist() == ["1"]
    with pytest.warns(DataWarning), pytest.raises(DataError, match="no product with a title in column 'title' and an id in column 'sku'"):
        read_catalog(table.iloc[1:], id_col="sku")
