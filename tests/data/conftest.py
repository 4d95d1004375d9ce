"""Tiny tables in the exact layouts of the public datasets, written by the tests themselves."""

from __future__ import annotations

import gzip
import os
import zipfile
from pathlib import Path
from typing import Callable

import pandas as pd
import pytest

from defectnas.errors import DataError

# --- ESCI: examples and products, as in amazon-science/esci-data (Parquet) -----------------
ESCI_EXAMPLES = pd.DataFrame(
    {
        "example_id": [0, 1, 2, 3, 4, 5],
        "query": ["Drill Bits", "drill bits", "drill bits", "usb cable", "usb cable", "usb cable"],
        "query_id": [0, 0, 0, 1, 1, 1],
        "product_id": ["B001", "B002", "B003", "B004", "B005", "B001"],
        "product_locale": ["us", "us", "us", "us", "us", "es"],
        "esci_label": ["E", "S", "I", "E", "C", "I"],
        "small_version": [1, 1, 1, 0, 0, 0],
        "large_version": [1, 1, 1, 1, 1, 1],
        "split": ["train", "train", "train", "test", "test", "test"],
    }
)
ESCI_PRODUCTS = pd.DataFrame(
    {
        "product_id": ["B001", "B002", "B003", "B004", "B005", "B001"],
        "product_title": ["DeWalt Drill Bit Set", "Bosch bits 10pc", "Garden hose", "USB-C Cable 2m", "USB charger",
                          "Juego de brocas"],
        "product_description": [None, "bits", None, "cable", None, None],
        "product_bullet_point": [None] * 6,
        "product_brand": ["DeWalt", "Bosch", "Acme", "Anker", "Anker", "DeWalt"],
        "product_color": [None] * 6,
        "product_locale": ["us", "us", "us", "us", "us", "es"],
    }
)

# --- WANDS: query.csv, product.csv, label.csv, tab-separated despite .csv -------------------
WANDS_QUERY = "query_id\tquery\tquery_class\n0\tsalon chair\tSalon Chairs\n1\tsmart coffee table\tCoffee Tables\n"
WANDS_PRODUCT = (
    "product_id\tproduct_name\tproduct_class\tcategory hierarchy\tproduct_description\tproduct_features\t"
    "rating_count\taverage_rating\treview_count\n"
    "10\tsalon massage chair\tMassage Chairs\tFurniture / Chairs\tcomfy, black\tcolor:black\t15\t4.5\t15\n"
    "11\tfloral rug\tRugs\tRugs\ta rug\t\t\t\t\n"
    "12\tlift top coffee table\tCoffee Tables\tFurniture / Tables\tsmart storage\t\t3\t4.0\t3\n"
)
WANDS_LABEL = "id\tquery_id\tproduct_id\tlabel\n0\t0\t10\tExact\n1\t0\t11\tIrrelevant\n2\t1\t12\tPartial\n3\t1\t11\tIrrelevant\n"

# --- Home Depot train.csv (ISO-8859-1, comma-separated) --------------------------------------
HOMEDEPOT_CSV = (
    "id,product_uid,product_title,search_term,relevance\n"
    '2,100001,Simpson Strong-Tie 12-Gauge Angle,angle bracket,3\n'
    '3,100001,Simpson Strong-Tie 12-Gauge Angle,l bracket,2.5\n'
    '9,100002,"BEHR Premium 1-gal. 90° Deck Over",deck over,3\n'
    '16,100005,Delta Vero Shower Faucet Trim Kit,rain shower head,1.33\n'
    '17,100005,Delta Vero Shower Faucet Trim Kit,shower only faucet,1.5\n'
    '18,100006,Whirlpool Café Microwave,microwave over stove,1\n'
)

# --- CrowdFlower train.csv -------------------------------------------------------------------
CROWDFLOWER_CSV = (
    '"id","query","product_title","product_description","median_relevance","relevance_variance"\n'
    '1,"bridal shower decorations","Accent Pillow with Heart Design - Red/Black","Red satin",1,0\n'
    '2,"led christmas lights","Set of 10 Battery Operated LED Lights","",4,0\n'
    '4,"led christmas lights","Accent Pillow with Heart Design - Red/Black","",2,0.471\n'
    '5,"bridal shower decorations","Bridal Shower Banner","",3,0.5\n'
)


@pytest.fixture
def esci_dir(tmp_path: Path) -> Path:
    ESCI_EXAMPLES.to_parquet(tmp_path / "shopping_queries_dataset_examples.parquet", index=False)
    ESCI_PRODUCTS.to_parquet(tmp_path / "shopping_queries_dataset_products.parquet", index=False)
    return tmp_path


@pytest.fixture
def wands_dir(tmp_path: Path) -> Path:
    for name, text in (("query.csv", WANDS_QUERY), ("product.csv", WANDS_PRODUCT), ("label.csv", WANDS_LABEL)):
        (tmp_path / name).write_text(text, encoding="utf-8")
    return tmp_path


@pytest.fixture
def homedepot_csv(tmp_path: Path) -> Path:
    path = tmp_path / "train.csv"
    path.write_bytes(HOMEDEPOT_CSV.encode("latin-1"))
    return path


@pytest.fixture
def crowdflower_csv(tmp_path: Path) -> Path:
    path = tmp_path / "train.csv"
    path.write_text(CROWDFLOWER_CSV, encoding="utf-8")
    return path


@pytest.fixture
def pairs() -> pd.DataFrame:
    """A small table as load_pairs returns it: 6 queries, 2 defects of 'q1', one of 'q2'."""
    return pd.DataFrame(
        {
            "query": ["q1", "q1", "q1", "q1", "q2", "q2", "q3", "q4", "q5", "q6", "q6", "q1"],
            "title": ["a b c", "d e", "f", "g h i j", "k", "l m", "n", "o", "p q", "r", "s t u", "d e"],
            "label": [0, 0, 1, 1, 0, 1, 0, 0, 0, 0, 0, 0],
            "product_id": [f"p{i}" for i in range(11)] + ["p1"],
        }
    )


@pytest.fixture
def raises_data_error() -> Callable[..., str]:
    """Call ``func(*args, **kwargs)``, expect a one-line DataError containing every fragment."""

    def check(func: Callable, *args, contains: tuple[str, ...] = (), **kwargs) -> str:
        with pytest.raises(DataError) as info:
            func(*args, **kwargs)
        message = str(info.value)
        assert "\n" not in message and "Traceback" not in message, message
        for fragment in contains:
            assert fragment in message, f"{fragment!r} not in {message!r}"
        return message

    return check


def shared_data_dir() -> Path | None:
    """The shared samples: $DEFECTNAS_SHARED (or its data/), else <repo>/../shared/data."""
    candidates = []
    if os.environ.get("DEFECTNAS_SHARED"):
        root = Path(os.environ["DEFECTNAS_SHARED"])
        candidates += [root / "data", root]
    candidates.append(Path(__file__).resolve().parents[2].parent / "shared" / "data")
    for candidate in candidates:
        if (candidate / "homedepot_sample.parquet").is_file():
            return candidate
    return None


@pytest.fixture
def shared_data() -> Path:
    found = shared_data_dir()
    if found is None:
        pytest.skip("shared data samples not found (set DEFECTNAS_SHARED)")
    return found


def write_file(tmp_path: Path, name: str, raw: bytes) -> Path:
    """``raw`` written to ``tmp_path / name``, gzip- or zip-compressed when the name ends in .gz or .zip
    (the zip holds one member, the name without .zip)."""
    path = tmp_path / name
    if name.endswith(".gz"):
        path.write_bytes(gzip.compress(raw))
    elif name.endswith(".zip"):
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr(name[: -len(".zip")], raw)
    else:
        path.write_bytes(raw)
    return path
