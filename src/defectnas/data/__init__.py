"""Data layer: read any supported table of query–product pairs, label defects, split, describe.

Why one package: every command starts from the same table (``query``, ``title``, ``label``,
``product_id`` [, ``split``]) built by :func:`load_pairs`; the rest of the library never reads
files or interprets dataset-specific labels itself.
"""

from .download import DATASETS, download
from .formats import FORMATS, SPECS, FormatSpec
from .integrity import coverage_report, coverage_warning, duplicate_report
from .load import DEFAULT_INVALID_ROWS, INVALID_ROWS, PairsRead, load_pairs, read_pairs, title_id
from .readers import read_table
from .splits import SPLITS_FILE, read_splits, split_by_query, write_splits
from .stats import describe, format_description
from .text import normalize_series, normalize_text, text_pairs
from .triplets import build_triplets

# (tokenizer re-exports go here)

__all__ = [
    "DATASETS",
    "DEFAULT_INVALID_ROWS",
    "INVALID_ROWS",
    "PairsRead",
    "coverage_report",
    "coverage_warning",
    "duplicate_report",
    "read_pairs",
    "FORMATS",
    "SPECS",
    "FormatSpec",
    "build_triplets",
    "describe",
    "download",
    "format_description",
    "load_pairs",
    "normalize_series",
    "normalize_text",
    "text_pairs",
    "read_table",
    "split_by_query",
    "title_id",
]
