"""Data shipped inside the package: a real sample of Amazon's Shopping Queries dataset (ESCI).

Why: the main job (``defectnas quickstart``) must run on a fresh machine with no data at hand
and no network. ESCI is Apache-2.0, so a small sample of it travels with the package:
``esci_sample.parquet`` — 4,485 judged (query, product) pairs of 100 US-English queries, all
four ESCI labels (E 50%, S 29%, I 16%, C 5%), defect = ``I`` (15.7%). The products are the
candidates ESCI judged for each query, hard negatives included, so its defects are harder to
find than a random irrelevant product. Provenance and caveats: ``README-esci.md`` beside this
file (the data card); attribution: ``NOTICE``.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import pandas as pd

ESCI_SAMPLE = "esci_sample.parquet"
ESCI_COLUMNS = ["query_id", "query", "product_id", "product_locale", "esci_label", "product_title"]
ESCI_SAMPLE_DESCRIPTION = "the embedded ESCI sample (Amazon Shopping Queries, 100 US queries, 4,485 judged pairs, Apache-2.0)"

__all__ = ["ESCI_COLUMNS", "ESCI_SAMPLE_DESCRIPTION", "esci_sample_path", "load_esci_sample"]


def esci_sample_path() -> Path:
    """Where the packaged ESCI sample lies on disk (a Parquet file in ESCI's column layout)."""
    path = Path(str(resources.files(__name__) / ESCI_SAMPLE))
    if not path.is_file():  # e.g. a zipped install, or a build that dropped the package data
        from ..errors import DataError

        raise DataError(f"the embedded ESCI sample is missing from the installed package ({path}); reinstall defectnas")
    return path


def load_esci_sample() -> pd.DataFrame:
    """The packaged ESCI sample as a DataFrame in ESCI's own columns.

    ``query_id`` (the original ESCI query id), ``query``, ``product_id`` (ASIN),
    ``product_locale`` (``us``), ``esci_label`` (E, S, C or I), ``product_title``; one row per
    judged pair, rows of a query adjacent. ``defectnas.data.load_pairs`` reads it (or its file,
    :func:`esci_sample_path`) as the ``esci`` format: defect = ``esci_label == "I"``.
    """
    return pd.read_parquet(esci_sample_path())[ESCI_COLUMNS]
