"""The dataset layouts ``--format`` names, and how each one's label becomes defect (1) or not (0).

Why plain data: a layout is only column names plus a label rule, so each public dataset is one
:class:`FormatSpec` in :data:`SPECS`, ``auto`` picks among them by the columns a table has,
and ``table`` builds a spec from the user's own column names. Adding a dataset is one entry.

Labels outside a dataset's documented values (an ESCI label "X", a Home Depot relevance of
"high" or 7) are errors naming the row, never silently counted as relevant.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from ..errors import LayoutError
from ._common import Source, as_strings, cell_text, counted, first_bad, more, row_at, show

FORMATS = ("auto", "esci", "wands", "homedepot", "crowdflower", "pairs", "table")  # every --format value


@dataclass(frozen=True)
class CategoricalLabels:
    """Text labels; the ones in ``defect`` are defects, all others relevant."""

    defect: frozenset[str]  # canonical labels of the defect class
    spellings: Mapping[str, str] | None = None  # casefolded spelling -> canonical label; None: any label allowed

    def to_defect(self, values: pd.Series, src: Source, column: str) -> pd.Series:
        text = as_strings(values)
        _no_missing(text, src, column)
        if self.spellings is None:  # the user's --defect-labels: any label, compared without case or surrounding spaces
            canonical = text.str.strip().str.casefold()
            defect = {(cell_text(d) or '').casefold() for d in self.defect}  # spelled as the cells are: '1.0' is '1'
            is_defect = canonical.isin(defect)
            near = _warn_near_misses(canonical[~is_defect], defect, src, column)
            _warn_unchecked_labels(canonical, is_defect, defect, src, column, near)
            return is_defect.astype("int64")
        canonical = text.map(lambda v: self.spellings.get(v.casefold()))
        bad = canonical.isna()
        if bad.any():
            pos, count = first_bad(bad)
            allowed = ", ".join(dict.fromkeys(self.spellings.values()))  # documented order
            raise src.error(f"{src.row(row_at(text, pos))}: {column} {show(text.iloc[pos])} is not one of {allowed}{more(count)}")
        return canonical.isin(self.defect).astype("int64")

    def describe(self) -> str:
        return " or ".join(sorted(self.defect))


def _warn_near_misses(relevant: pd.Series, defect: set[str], src: Source, column: str) -> set[str]:
    """One DataWarning line naming label values read as relevant that look like a misspelt defect
    label ("defct" for "defect"; difflib's ratio ≥ 0.8): a rater's typo must not silently become a
    relevant pair. Returns the values it named."""
    import difflib
    import warnings

    from ..errors import DataWarning

    counts = relevant.value_counts()
    near = {v: int(n) for v, n in counts.items() if v and difflib.get_close_matches(v, defect, n=1, cutoff=0.8)}
    if near:
        shown = ", ".join(f"{v!r} ({n})" for v, n in list(near.items())[:5])
        warnings.warn(src.error(f"column {column!r}: {counted(sum(near.values()), 'row')} with a label close to a defect label read as "
                                f"relevant: {shown}; correct them or add them to --defect-labels").args[0], DataWarning, stacklevel=3)
    return set(near)


def _warn_unchecked_labels(canonical: pd.Series, is_defect: pd.Series, defect: set[str], src: Source, column: str,
                           near: set[str] = frozenset()) -> None:
    """One DataWarning line when --defect-labels matches no cell (naming every value, the column's
    whole content), or when more than one distinct value is read as relevant ("yes", "maybe", "y"):
    everything not declared a defect counts as relevant, so an "unsure" bucket would silently
    become relevant training pairs. ``canonical``: the casefolded labels; ``near``: values already
    named as near misses of a defect label, left out of the second count."""
    import warnings

    from ..errors import DataWarning

    def listed(counts: pd.Series) -> str:
        shown = ", ".join(f"{v!r} ({int(n):,})" for v, n in counts.head(6).items())
        return shown + (f" and {len(counts) - 6} more" if len(counts) > 6 else "")

    relevant = canonical[~is_defect & ~canonical.isin(near)].value_counts()
    if not is_defect.any() and len(canonical):
        message = (f"column {column!r}: no cell matches --defect-labels ({', '.join(sorted(repr(d) for d in defect))}), so every pair "
                   f"is read as relevant; its values are {listed(canonical.value_counts())}")
    elif len(relevant) > 1:
        message = (f"column {column!r}: {len(relevant)} different values read as relevant (every value not in --defect-labels is): "
                   f"{listed(relevant)}; check that each means relevant, or add it to --defect-labels")
    else:
        return
    warnings.warn(src.error(message).args[0], DataWarning, stacklevel=3)


@dataclass(frozen=True)
class NumericLabels:
    """Numeric scores; a score below ``defect_below`` is a defect."""

    defect_below: float  # scores strictly below this are defects
    low: float | None = None  # smallest accepted score (None: no bound)
    high: float | None = None  # largest accepted score (None: no bound)
    integer: bool = False  # scores must be whole numbers

    def to_defect(self, values: pd.Series, src: Source, column: str) -> pd.Series:
        _no_missing(values, src, column)
        numbers = pd.to_numeric(as_strings(values), errors="coerce").astype("float64")
        bad = numbers.isna() | ~np.isfinite(numbers)
        if self.integer:
            bad |= numbers != numbers.round()
        if self.low is not None:
            bad |= numbers < self.low
        if self.high is not None:
            bad |= numbers > self.high
        if bad.any():
            pos, count = first_bad(bad)
            value = values.iloc[pos]
            comma = "; a decimal comma? write numbers with a point (2.5)" if re.fullmatch(r"\s*-?\d+,\d+\s*", str(value)) else ""
            raise src.error(f"{src.row(row_at(values, pos))}: {column} {show(value)} is not {self._expected()}{more(count)}{comma}")
        return (numbers < self.defect_below).astype("int64")

    def _expected(self) -> str:
        kind = "a whole number" if self.integer else "a number"
        if self.low is not None and self.high is not None:
            return f"{kind} from {self.low:g} to {self.high:g}"
        return kind

    def describe(self) -> str:
        if self.integer and self.low is not None and self.low < self.defect_below <= self.low + 1:
            return f"{self.low:g}"  # whole scores: CrowdFlower's "< 1.5" is "= 1", as its data card says
        return f"< {self.defect_below:g}"


LabelRule = CategoricalLabels | NumericLabels


@dataclass(frozen=True)
class FormatSpec:
    """One table layout: which columns hold what, and which labels are defects."""

    name: str  # the --format value
    query_col: str  # the search query
    title_col: str  # the product title shown for it
    label_col: str | None  # the relevance judgement (None: unlabelled table)
    rule: LabelRule | None  # how label_col maps to defect (1) / relevant (0)
    product_id_col: str | None = None  # a product id, if the dataset has one
    query_id_col: str | None = None  # a query id, if the dataset has one
    split_col: str | None = None  # a train/test assignment shipped with the dataset

    def required(self, labels: bool = True) -> list[str]:
        """Columns a table must have for this layout."""
        cols = [self.query_col, self.title_col]
        return cols + [self.label_col] if labels and self.label_col else cols

    def summary(self) -> str:
        """e.g. "esci (query, product_title, esci_label; defect = I)"."""
        rule = f"; defect = {self.rule.describe()}" if self.rule else ""
        return f"{self.name} ({', '.join(self.required())}{rule})"


def _spellings(words: Mapping[str, Sequence[str]]) -> dict[str, str]:
    return {s.casefold(): label for label, spelled in words.items() for s in (label, *spelled)}


SPECS: dict[str, FormatSpec] = {
    spec.name: spec
    for spec in (
        FormatSpec(
            "esci", "query", "product_title", "esci_label",
            CategoricalLabels(
                frozenset({"I"}),
                _spellings({"E": ["Exact"], "S": ["Substitute"], "C": ["Complement"], "I": ["Irrelevant"]}),
            ),
            product_id_col="product_id", query_id_col="query_id", split_col="split",
        ),
        FormatSpec(
            "wands", "query", "product_name", "label",
            CategoricalLabels(frozenset({"Irrelevant"}), _spellings({"Exact": [], "Partial": [], "Irrelevant": []})),
            product_id_col="product_id", query_id_col="query_id",
        ),
        FormatSpec(
            "homedepot", "search_term", "product_title", "relevance",
            NumericLabels(defect_below=1.5, low=1.0, high=3.0),
            product_id_col="product_uid",
        ),
        FormatSpec(
            "crowdflower", "query", "product_title", "median_relevance",
            NumericLabels(defect_below=1.5, low=1.0, high=4.0, integer=True),  # defect = 1
        ),
        FormatSpec(  # this library's own layout, as load_pairs returns it: saved tables load back
            "pairs", "query", "title", "label",
            CategoricalLabels(frozenset({"1"}), {"0": "0", "1": "1"}),  # defect = 1
            product_id_col="product_id", split_col="split",
        ),
    )
}


def table_spec(
    src: Source,
    query_col: str | None,
    title_col: str | None,
    label_col: str | None,
    defect_labels: Sequence[str] | str | None,
    defect_below: float | None,
    labels: bool = True,
) -> FormatSpec:
    """The ``table`` format: the user's own column names and label rule."""
    if not query_col or not title_col:
        raise src.error("format 'table' needs query_col and title_col (--query-col, --title-col)")
    rule = label_rule(src, defect_labels, defect_below)
    if labels and (not label_col or rule is None):
        raise src.error(
            "format 'table' needs label_col (--label-col) and exactly one of defect_labels or defect_below "
            "(--defect-labels A,B or --defect-below X)"
        )
    # a column named product_id / query_id is the ids, as in ESCI's and WANDS' layouts (used when present)
    return FormatSpec("table", query_col, title_col, label_col, rule, product_id_col="product_id", query_id_col="query_id")


def label_rule(src: Source, defect_labels: Sequence[str] | str | None, defect_below: float | None) -> LabelRule | None:
    """The user's label rule: categorical defect labels ("A,B" or a list) or a numeric threshold."""
    if defect_labels is not None and defect_below is not None:
        raise src.error("give only one of defect_labels (--defect-labels) and defect_below (--defect-below)")
    if defect_labels is not None:
        names = defect_labels.split(",") if isinstance(defect_labels, str) else list(defect_labels)
        names = [str(n).strip() for n in names if str(n).strip()]
        if not names:
            raise src.error("defect_labels (--defect-labels) is empty")
        return CategoricalLabels(frozenset(names))
    if defect_below is not None:
        try:
            threshold = float(defect_below)
        except (TypeError, ValueError):
            raise src.error(f"defect_below (--defect-below) must be a number, got {defect_below!r}") from None
        return NumericLabels(defect_below=threshold)
    return None


def with_overrides(spec: FormatSpec, src: Source, query_col: str | None, title_col: str | None,
                   label_col: str | None, defect_labels: Sequence[str] | str | None,
                   defect_below: float | None) -> FormatSpec:
    """A named layout with the user's column names or label rule put in place of its own."""
    changes: dict = {k: v for k, v in (("query_col", query_col), ("title_col", title_col), ("label_col", label_col)) if v}
    rule = label_rule(src, defect_labels, defect_below)
    if rule is not None:
        changes["rule"] = rule
    return dataclasses.replace(spec, **changes) if changes else spec


def detect(columns: Sequence[str], src: Source, labels: bool = True) -> FormatSpec:
    """The public layout whose columns ``columns`` has (``--format auto``).

    With ``labels=False`` only the query and title columns must be present; a layout whose
    label and id columns are present too wins over one that merely shares the text columns.
    """
    present = set(map(str, columns))
    scored = []
    for order, spec in enumerate(SPECS.values()):
        if not set(spec.required(labels)) <= present:
            continue
        optional = (spec.label_col, spec.product_id_col, spec.query_id_col, spec.split_col)
        scored.append((-sum(c in present for c in optional if c), order, spec))
    if not scored and labels:  # a known layout without its label column: say which column is missing
        unlabelled = [spec for spec in SPECS.values() if set(spec.required(labels=False)) <= present]
        if unlabelled:  # (query, product_title: ESCI's or CrowdFlower's; each layout's label named)
            spec = unlabelled[0]
            names = " or ".join(s.name for s in unlabelled)
            labels_named = " or ".join(f"{s.label_col!r} (defect = {s.rule.describe()})" for s in unlabelled)
            raise src.error(f"the {names} layout ({spec.query_col}, {spec.title_col}) without its label column {labels_named}: "
                            f"this needs labelled pairs; columns: {', '.join(map(str, columns))}; a label under another name: "
                            "--label-col L [--defect-labels A,B | --defect-below X]", LayoutError)
    if not scored:
        known = "; ".join(spec.summary() for spec in SPECS.values())
        name = ("--query-col Q --title-col T" + (" --label-col L [--defect-labels A,B | --defect-below X]" if labels else "")
                + " (Python: query_col=, title_col=" + (", label_col=" if labels else "") + ")")
        glued = [c for c in map(str, columns) if any(sep in c for sep in (";", "\t", "|", ","))]
        hint = f"; one column is named {glued[0]!r}: is the file separated by another character than its type's?" if len(columns) == 1 and glued else ""
        raise src.error(f"cannot recognise the table layout (columns: {', '.join(map(str, columns))}); known layouts: {known}; "
                        f"for another table name its columns: {name}{hint}", LayoutError)
    return min(scored, key=lambda item: item[:2])[2]


def _no_missing(values: pd.Series, src: Source, column: str) -> None:
    missing = values.isna()
    if missing.any():
        pos, count = first_bad(missing)
        raise src.error(f"{src.row(row_at(values, pos))}: {column} is empty{more(count)}")
