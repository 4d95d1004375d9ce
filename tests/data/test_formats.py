"""Each public layout, in its exact columns, is recognised by ``auto`` and labelled as documented."""

from pathlib import Path

import pandas as pd
import pytest

from defectnas.data import FORMATS, load_pairs
from defectnas.data.formats import SPECS
from defectnas.data.load import title_id

from .conftest import ESCI_EXAMPLES, ESCI_PRODUCTS


def test_formats_lists_every_format_value():
    assert FORMATS == ("auto", "esci", "wands", "homedepot", "crowdflower", "pairs", "table")


@pytest.mark.parametrize("target", ["shopping_queries_dataset_examples.parquet", "."])
def test_esci_examples_join_titles_from_products_file(esci_dir: Path, target: str):
    out = load_pairs(esci_dir / target)
    assert list(out.columns) == ["query", "title", "label", "product_id", "split"]
    assert out["label"].tolist() == [0, 0, 1, 0, 0, 1]  # I = defect; E, S, C relevant
    assert out["title"].tolist()[:3] == ["dewalt drill bit set", "bosch bits 10pc", "garden hose"]
    assert out["title"].iloc[5] == "juego de brocas"  # B001 joined on (product_id, product_locale)
    assert out["query"].iloc[0] == "drill bits"
    assert out["product_id"].tolist() == ESCI_EXAMPLES["product_id"].tolist()
    assert out["split"].tolist() == ["train"] * 3 + ["test"] * 3
    assert out["label"].dtype == "int64"


def test_esci_merged_table_and_full_word_labels(tmp_path: Path):
    merged = ESCI_EXAMPLES.merge(ESCI_PRODUCTS[["product_id", "product_locale", "product_title"]])
    merged["esci_label"] = ["Exact", "substitute", "IRRELEVANT", "E", "Complement", "I"]
    path = tmp_path / "merged.jsonl"
    merged.to_json(path, orient="records", lines=True)
    assert load_pairs(path)["label"].tolist() == [0, 0, 1, 0, 0, 1]


def test_esci_without_products_file(tmp_path: Path, raises_data_error):
    path = tmp_path / "shopping_queries_dataset_examples.parquet"
    ESCI_EXAMPLES.to_parquet(path, index=False)
    raises_data_error(load_pairs, path, contains=(str(path), "product_title", "shopping_queries_dataset_products.parquet"))


@pytest.mark.parametrize("target", [".", "label.csv"])
def test_wands_directory_or_label_file(wands_dir: Path, target: str):
    out = load_pairs(wands_dir / target)
    assert out["query"].tolist() == ["salon chair", "salon chair", "smart coffee table", "smart coffee table"]
    assert out["title"].tolist() == ["salon massage chair", "floral rug", "lift top coffee table", "floral rug"]
    assert out["label"].tolist() == [0, 1, 0, 1]
    assert out["product_id"].tolist() == ["10", "11", "12", "11"]
    assert "split" not in out.columns


def test_wands_merged_table(tmp_path: Path):
    path = tmp_path / "wands.csv"
    pd.DataFrame({"query": ["a", "a"], "product_name": ["x", "y"], "label": ["Partial", "Irrelevant"]}).to_csv(path, index=False)
    assert load_pairs(path)["label"].tolist() == [0, 1]


def test_wands_unknown_product_names_the_row(wands_dir: Path, raises_data_error):
    (wands_dir / "label.csv").write_text("id\tquery_id\tproduct_id\tlabel\n0\t0\t10\tExact\n1\t0\t99\tExact\n")
    raises_data_error(load_pairs, wands_dir, contains=("label.csv", "row 2", "product_id '99'", "product.csv"))


def test_homedepot_latin1_csv(homedepot_csv: Path):
    out = load_pairs(homedepot_csv)
    assert out["label"].tolist() == [0, 0, 0, 1, 0, 1]  # relevance < 1.5; 1.5 itself is relevant
    assert out["title"].iloc[2] == "behr premium 1-gal. 90° deck over"
    assert out["title"].iloc[5] == "whirlpool café microwave"
    assert out["product_id"].tolist() == ["100001", "100001", "100002", "100005", "100005", "100006"]


def test_crowdflower_csv_and_title_ids(crowdflower_csv: Path):
    out = load_pairs(crowdflower_csv)
    assert out["label"].tolist() == [1, 0, 0, 0]  # median_relevance == 1
    assert out["product_id"].iloc[0] == out["product_id"].iloc[2] == title_id("accent pillow with heart design - red/black")
    assert len(out["product_id"].iloc[0]) == 12


@pytest.mark.parametrize(
    "frame, fmt, fragments",
    [
        (ESCI_EXAMPLES.assign(product_title="t", esci_label=["E", "X", "I", "E", "I", "E"]), "auto",
         ("row 2", "esci_label 'X'", "E, S, C, I")),
        (pd.DataFrame({"query": ["a", "b"], "product_name": ["x", "y"], "label": ["Exact", "Foo"]}), "wands",
         ("row 2", "label 'Foo'", "Exact, Partial, Irrelevant")),
        (pd.DataFrame({"search_term": ["a", "b"], "product_title": ["x", "y"], "relevance": ["3", "high"]}), "auto",
         ("row 2", "relevance 'high'", "a number from 1 to 3")),
        (pd.DataFrame({"search_term": ["a", "b"], "product_title": ["x", "y"], "relevance": [1.0, 3.5]}), "homedepot",
         ("row 2", "relevance 3.5",)),
        (pd.DataFrame({"query": ["a", "b", "c"], "product_title": ["x", "y", "z"], "median_relevance": [1, 7, 9]}), "auto",
         ("row 2", "median_relevance 7", "whole number from 1 to 4", "and 1 more row)")),
        (pd.DataFrame({"search_term": ["a", "b"], "product_title": ["x", "y"], "relevance": ["3", "2,33"]}), "auto",
         ("row 2", "relevance '2,33'", "a decimal comma? write numbers with a point")),
    ],
)
def test_label_outside_the_mapping(tmp_path: Path, raises_data_error, frame, fmt, fragments):
    path = tmp_path / "t.parquet"
    frame.to_parquet(path, index=False)
    raises_data_error(load_pairs, path, format=fmt, contains=(str(path), *fragments))


def test_auto_lists_known_layouts_when_nothing_fits(tmp_path: Path, raises_data_error):
    path = tmp_path / "t.csv"
    path.write_text("q,t,y\na,b,1\n")
    raises_data_error(load_pairs, path, contains=(str(path), "columns: q, t, y", "esci (query, product_title, esci_label",
                                                  "wands", "homedepot", "crowdflower", "table"))


@pytest.mark.parametrize("columns, fragments", [
    (["id", "product_uid", "product_title", "search_term"], ("the homedepot layout (search_term, product_title) without its label "
                                                               "column 'relevance'", "--label-col")),
    (["query", "product_title", "median_relevance_x"], ("the esci or crowdflower layout (query, product_title) without its label "
                                                         "column 'esci_label' (defect = I) or 'median_relevance' (defect = 1)",)),
    (["query", "title"], ("the pairs layout (query, title) without its label column 'label' (defect = 1)",)),
])
def test_a_known_layout_without_its_label_column_names_the_missing_column(tmp_path: Path, raises_data_error, columns, fragments):
    path = tmp_path / "t.csv"
    path.write_text(",".join(columns) + "\n" + ",".join(["x"] * len(columns)) + "\n")
    raises_data_error(load_pairs, path, contains=(str(path), *fragments))
    assert load_pairs(path, labels=False)["query"].tolist() == ["x"]  # predict's unlabelled read still takes it


def test_crowdflower_layout_says_its_defect_label_as_its_data_card_does():
    assert SPECS["crowdflower"].summary() == "crowdflower (query, product_title, median_relevance; defect = 1)"
    assert SPECS["homedepot"].summary().endswith("defect = < 1.5)")


def test_table_with_defect_labels_and_defect_below(tmp_path: Path):
    path = tmp_path / "t.tsv"
    path.write_text("q\tt\tgrade\tscore\na\tx\tbad \t0.1\na\ty\tgood\t0.9\nb\tz\tawful\t0.5\n")
    common = dict(format="table", query_col="q", title_col="t")
    assert load_pairs(path, label_col="grade", defect_labels=["bad", "awful"], **common)["label"].tolist() == [1, 0, 1]
    assert load_pairs(path, label_col="grade", defect_labels="bad,awful", **common)["label"].tolist() == [1, 0, 1]
    assert load_pairs(path, label_col="score", defect_below=0.5, **common)["label"].tolist() == [1, 0, 0]
    # with format auto, naming the query and title columns means "table"
    assert load_pairs(path, query_col="q", title_col="t", label_col="score", defect_below=0.6)["label"].tolist() == [1, 0, 1]


def test_table_option_errors(tmp_path: Path, raises_data_error):
    path = tmp_path / "t.csv"
    path.write_text("q,t,score\na,x,0.1\nb,y,zz\n")
    raises_data_error(load_pairs, path, format="table", query_col="q", label_col="score", defect_below=1,
                      contains=("query_col and title_col",))
    raises_data_error(load_pairs, path, format="table", query_col="q", title_col="t", label_col="score",
                      contains=("defect_labels", "defect_below"))
    raises_data_error(load_pairs, path, format="table", query_col="q", title_col="t", label_col="score",
                      defect_labels=["a"], defect_below=1.0, contains=("only one of",))
    raises_data_error(load_pairs, path, format="table", query_col="q", title_col="t", label_col="score",
                      defect_below=0.5, contains=(str(path), "row 2", "score 'zz'", "a number"))


def test_pairs_layout_round_trips(crowdflower_csv: Path, tmp_path: Path):
    loaded = load_pairs(crowdflower_csv).assign(split=["train", "test", "test", "train"])
    path = tmp_path / "pairs.csv"
    loaded.to_csv(path, index=False)
    pd.testing.assert_frame_equal(load_pairs(path), loaded)
    unlabelled = tmp_path / "predict.jsonl"
    loaded[["query", "title"]].to_json(unlabelled, orient="records", lines=True)
    out = load_pairs(unlabelled, labels=False)
    assert out["title"].tolist() == loaded["title"].tolist() and out["product_id"].tolist() == loaded["product_id"].tolist()


def test_user_defect_labels_ignore_case_and_spaces_and_typos_are_named(tmp_path):
    """Raters type "Defect" or " defect"; a typo ("defct") must not silently become relevant."""
    import warnings

    from defectnas.data import load_pairs
    from defectnas.errors import DataWarning

    path = tmp_path / "rated.csv"
    pd.DataFrame({"q": ["a", "b", "c", "d", "e"], "t": ["x", "y", "z", "w", "v"],
                  "r": ["Defect", " defect ", "defct", "relevant", "RELEVANT"]}).to_csv(path, index=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        df = load_pairs(path, query_col="q", title_col="t", label_col="r", defect_labels="defect", require_both_classes=False)
    assert df["label"].tolist() == [1, 1, 0, 0, 0]
    lines = [str(w.message) for w in caught if issubclass(w.category, DataWarning)]
    assert len(lines) == 1 and "'defct' (1)" in lines[0] and "rated.csv" in lines[0]


def test_user_defect_labels_name_every_other_value_read_as_relevant_and_a_list_that_matches_nothing(tmp_path):
    """Every value not in --defect-labels is relevant: when that is more than one value ("yes",
    "maybe", "y") or the list matches no cell, one warning line lists them with their counts."""
    import warnings

    from defectnas.data import load_pairs
    from defectnas.errors import DataWarning

    path = tmp_path / "mine.csv"
    pd.DataFrame({"q": list("abcdefgh"), "t": list("stuvwxyz"),
                  "r": ["yes", "no", "maybe", "Y", "yes", "No ", "noo", "yes"]}).to_csv(path, index=False)

    def lines(**options):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            df = load_pairs(path, query_col="q", title_col="t", label_col="r", require_both_classes=False, **options)
        return df, [str(w.message) for w in caught if issubclass(w.category, DataWarning)]

    df, said = lines(defect_labels="no")
    assert df["label"].tolist() == [0, 1, 0, 0, 0, 1, 0, 0]
    assert len(said) == 2 and "1 row with a label close to a defect label read as relevant: 'noo' (1)" in said[0]
    assert "3 different values read as relevant" in said[1] and "'yes' (3), 'maybe' (1), 'y' (1)" in said[1] and "noo" not in said[1]
    df, said = lines(defect_labels="irrelevant")
    assert df["label"].sum() == 0 and len(said) == 1
    assert "no cell matches --defect-labels ('irrelevant')" in said[0] and "'yes' (3), 'no' (2)" in said[0]
    df, said = lines(defect_labels="ye")  # a near miss of 'yes': named first, and not left out of "its values" after
    assert df["label"].sum() == 0 and len(said) == 2
    assert said[0].endswith("3 rows with a label close to a defect label read as relevant: 'yes' (3); correct them or add them to --defect-labels")
    assert "no cell matches --defect-labels ('ye')" in said[1] and "its values are 'yes' (3), 'no' (2), " in said[1]  # helper, session 21
    _, said = lines(defect_labels="no,maybe,noo,y")  # one value left for relevant: nothing to say
    assert said == []


@pytest.mark.parametrize("value, text", [(100001, "100001"), (100001.0, "100001"), ("100001.0", "100001"), (" 100001.00 ", "100001"),
                                         ("-7.0", "-7"), ("1.5", "1.5"), ("SKU-7.0a", "SKU-7.0a"), ("v2.0", "v2.0"),
                                         (None, None), (float("nan"), None)])
def test_cell_text_spells_whole_numbers_one_way(value, text):
    """An id column pandas saved with a gap reads back as 100001.0 (float or text): the same product."""
    from defectnas.data._common import cell_text

    assert cell_text(value) == text


def test_ids_and_labels_written_as_floats_match_their_integer_spelling(tmp_path: Path):
    path = tmp_path / "t.csv"
    path.write_text("q,t,product_id,grade\na,x,100001.0,1.0\na,y,100002,0\nb,z,100003.0,1\n")
    out = load_pairs(path, format="table", query_col="q", title_col="t", label_col="grade", defect_labels="1.0")
    assert out["product_id"].tolist() == ["100001", "100002", "100003"]
    assert out["label"].tolist() == [1, 0, 1]  # '--defect-labels 1.0' is the cells' '1' and '1.0'
