import io
import json
import zipfile
from pathlib import Path

import pandas as pd
import pytest

from defectnas.data import read_table
from defectnas.errors import DataWarning

from .conftest import write_file

TABLE = pd.DataFrame({"query": ["drill bits", "NA", "café"], "title": ["bit set", "null", "x, y"], "label": ["E", "I", "S"]})


def _text(kind: str) -> bytes:
    if kind == "csv":
        return TABLE.to_csv(index=False).encode()
    if kind == "tsv":
        return TABLE.to_csv(index=False, sep="\t").encode()
    if kind in ("jsonl", "json"):
        return TABLE.to_json(orient="records", lines=True, force_ascii=False).encode()
    buf = io.BytesIO()
    TABLE.to_parquet(buf, index=False)
    return buf.getvalue()


@pytest.mark.parametrize(
    "name",
    ["t.csv", "t.tsv", "t.jsonl", "t.json", "t.parquet", "t.csv.gz", "t.tsv.gz", "t.jsonl.gz", "t.parquet.gz",
     "train.csv.zip", "t.tsv.zip", "t.parquet.zip"],
)
def test_reads_every_type_plain_gz_and_zip(tmp_path: Path, name: str):
    parts = name.split(".")
    raw = _text(parts[1])
    frame = read_table(write_file(tmp_path, name, raw))
    assert list(frame.columns) == ["query", "title", "label"]
    assert frame.astype(str).values.tolist() == TABLE.values.tolist()  # "NA"/"null" stay text


def test_zip_member_name_decides_then_archive_name(tmp_path: Path):
    path = tmp_path / "data.csv.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("inner.tsv", _text("tsv"))
    assert read_table(path)["title"].tolist() == TABLE["title"].tolist()
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("export", _text("csv"))
    assert read_table(path)["title"].tolist() == TABLE["title"].tolist()


def test_json_array_of_records(tmp_path: Path):
    path = tmp_path / "t.json"
    path.write_text(json.dumps(TABLE.to_dict("records")), encoding="utf-8")
    assert read_table(path)["query"].tolist() == TABLE["query"].tolist()


def test_csv_falls_back_to_latin1(tmp_path: Path):
    path = tmp_path / "t.csv"
    path.write_bytes("query,title\ncafé,90° elbow\n".encode("latin-1"))
    assert read_table(path).iloc[0].tolist() == ["café", "90° elbow"]


def test_tab_separated_csv_is_detected_and_ids_keep_zeros(tmp_path: Path):
    path = tmp_path / "label.csv"
    path.write_text("id\tproduct_id\n0\t007\n", encoding="utf-8")
    assert read_table(path).iloc[0].tolist() == ["0", "007"]


@pytest.mark.parametrize("sep", [";", "|"])
def test_a_csv_separated_by_semicolons_or_bars_is_detected(tmp_path: Path, sep):
    path = tmp_path / "excel.csv"  # Excel's CSV in locales whose decimal mark is a comma
    path.write_text(f"query{sep}title{sep}label\ndrill{sep}DeWalt drill, 20V{sep}0\n", encoding="utf-8")
    assert read_table(path).to_dict("list") == {"query": ["drill"], "title": ["DeWalt drill, 20V"], "label": ["0"]}


def test_row_names_on_every_row_are_kept_as_a_column(tmp_path: Path):
    path = tmp_path / "r.csv"  # R's write.table: the header one name short of every row
    path.write_text("query,title\n1,drill,DeWalt drill\n2,saw,Hand saw\n", encoding="utf-8")
    with pytest.warns(DataWarning, match="every row has 3 fields.*'row_name'"):
        frame = read_table(path)
    assert frame.to_dict("list") == {"row_name": ["1", "2"], "query": ["drill", "saw"], "title": ["DeWalt drill", "Hand saw"]}


def test_columns_selects_and_reports_missing(tmp_path: Path, raises_data_error):
    path = tmp_path / "t.parquet"
    TABLE.to_parquet(path, index=False)
    assert list(read_table(path, columns=["label", "query"]).columns) == ["label", "query"]
    raises_data_error(read_table, path, columns=["query", "nope"], contains=(str(path), "nope", "columns present"))


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    "name, data, fragments",
    [
        ("t.csv", b"a,b\n1,2\n3,4,5\n", ("malformed row at file line 3 (the header is line 1)", "expected 2 fields, saw 3", "--invalid-rows")),
        # an unquoted separator in the *first* row: pandas would read its first field as an index and shift every column
        ("t.csv", b"query,title,label\ndrill,DeWalt drill, 20V,0\nsaw,Hand saw,0\n", ("malformed row at file line 2", "expected 3 fields, saw 4")),
        ("t.csv", b"a,b\n\nr1,x,1\n3,4\n", ("malformed row at file line 3", "expected 2 fields, saw 3")),  # after a blank line
        ("t.csv", b'a,b\n"x\ny",1,2\n3,4\n', ("malformed row at file line 2", "saw 3")),  # a quoted cell over two lines
        ("t.tsv", b"a\tb\n1\t2\t3\n4\t5\n", ("malformed row at file line 2", "expected 2 fields, saw 3")),
        ("t.csv", b"", ("file is empty",)),
        ("t.tsv", b"a\tb\n", ("no rows",)),
        ("t.jsonl", b'{"a": 1}\n{"a": \n', ("malformed JSON at line 2: Expecting value at column 7",)),
        ("t.jsonl", b'{"a": 1}\n{"q": "x, "t": 2}\n', ("malformed JSON at line 2: Expecting ',' delimiter at column 12",)),
        ("t.jsonl", b'{"a": 1}\n{"a": 1}\n{"q": "drill\n', ("malformed JSON at line 3: Unterminated string starting at column 7",)),
        ("t.json", b'[{"a": 1},\n {"a": 2,}]', ("malformed JSON at line 2: Expecting property name enclosed in double quotes at column 10",)),
        ("t.jsonl", b'{"a": "caf\xe9"}\n', ("cannot decode", "UTF-8", "0xe9")),
        ("t.jsonl", b'{"a": 1}\n[1, 2]\n', ("line 2 is not a JSON object",)),
        ("t.parquet", b"not parquet at all", ("not a readable Parquet file",)),
        ("t.csv.gz", b"not gzip", ("cannot decompress .gz",)),
        ("t.zip", b"not a zip", ("not a readable zip",)),
        ("t.xlsx", b"x", ("unknown file type '.xlsx'", ".csv", ".tsv", ".jsonl", ".parquet", ".gz", ".zip")),
    ],
)
def test_bad_files_raise_one_line_errors(tmp_path: Path, raises_data_error, name, data, fragments):
    path = _write(tmp_path / name, data)
    raises_data_error(read_table, path, contains=(str(path), *fragments))


def test_missing_file_directory_and_multi_member_zip(tmp_path: Path, raises_data_error):
    raises_data_error(read_table, tmp_path / "nope.csv", contains=("nope.csv", "not found"))
    raises_data_error(read_table, tmp_path, contains=("directory",))
    path = tmp_path / "two.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("a.csv", "x\n1\n")
        archive.writestr("b.csv", "x\n2\n")
    raises_data_error(read_table, path, contains=("two.zip", "exactly one", "a.csv"))


@pytest.mark.parametrize("name", ["t.csv", "t.tsv"])
def test_a_header_naming_a_column_twice_is_said_in_one_warning(tmp_path, name):
    """pandas reads the second "lab" as "lab.1"; --label-col lab would silently take the first."""
    import warnings

    from defectnas.errors import DataWarning

    sep = "\t" if name.endswith(".tsv") else ","
    path = write_file(tmp_path, name, sep.join(["q", "t", "lab", "lab"]).encode() + b"\na" + sep.encode() + sep.join(["x", "yes", "no"]).encode() + b"\n")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        frame = read_table(path)
    lines = [str(w.message) for w in caught if issubclass(w.category, DataWarning)]
    assert list(frame.columns) == ["q", "t", "lab", "lab.1"]
    assert lines == [f"{path}: the header names a column twice: 'lab' (columns 3 and 4; the second read as 'lab.1'); a column option "
                     "naming it takes the first: rename one"]
