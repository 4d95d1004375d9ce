"""report.html: one self-contained page a search manager can open without a network.

Why a module of its own: the summary is for scripts, this page is for people. It shows the
headline rates with their intervals and the threshold counts beside them, the defect rate by
position, the distribution over queries, the worst queries with their likeliest defect
products, the groups, the missing products and (with a baseline) what changed. Plots are PNGs
drawn with matplotlib (Agg) and embedded as base64 ``data:`` URIs; there is no script, font or
style sheet from elsewhere. Every number taken from summary.json is printed by :func:`num` and
carries ``data-key="<dotted path in summary.json>"``, so a test can check the page against
the summary. Numbers are fixed-point (:func:`fixed`): a reader compares 0.0034 with 0.000017,
not with 1.7e-05.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from ..html_page import DIGITS, END, escape, figure_img, fmt, head, lookup, pyplot
from .rates import NOISE


def write_report(out: Path, summary: dict, queries: pd.DataFrame, files: dict[Path, str]) -> Path:
    """report.html of ``summary`` (summary.json's dict) and ``queries`` (queries.csv's rows) into
    ``files`` (path → text: the run writes it with its other outputs, once all are ready)."""
    parts = [_head(summary), _headline(summary), _positions(summary), _distribution(queries), _worst(summary),
             _groups(summary), _missing(summary), _baseline(summary), _methods(summary), END]
    path = out / "report.html"
    files[path] = "\n".join(p for p in parts if p)
    return path


def fixed(value, digits: int = DIGITS) -> str:
    """A value as the page shows it (:func:`~defectnas.html_page.fmt`), always in fixed point: a
    float that ``digits`` decimals would show as 0 gets the decimals of two significant digits
    (0.000017, not 1.7e-05 — nor 0.0000, which would read as no change), unless it is below
    :data:`~.rates.NOISE`: the float rounding of the same sums added in another order (a page
    whose products only moved), shown as 0, as ``worse``/``better`` treat it."""
    if isinstance(value, float) and value == value and abs(value) < 0.5 * 10 ** -digits:
        if abs(value) < NOISE:
            return fmt(0.0, digits)
        return f"{value:.{1 - math.floor(math.log10(abs(value)))}f}"
    return fmt(value, digits)


def num(data: dict, key: str, digits: int = DIGITS) -> str:
    """The value at dotted ``key`` of ``data``, :func:`fixed`, in a span tagged with the key."""
    return f'<span data-key="{escape(key)}">{fixed(lookup(data, key), digits)}</span>'


# ------------------------------------------------------------------ sections (the page pieces: defectnas.html_page)
def _head(s: dict) -> str:
    name = Path(s["log"]).name
    return head(f"defectnas audit: {name}", f"Search defect audit: {name}",
                f"model {escape(s['model'])} · {num(s, 'rows', 0)} shown pairs, "
                f"{num(s, 'overall.queries', 0)} queries · decision threshold {num(s, 'threshold')}")


def _headline(s: dict) -> str:
    cards = []
    names = {"unweighted": "Defect rate (all shown pairs)", "position_weighted": "Position-weighted rate (DCG weights)",
             "traffic_weighted": "Traffic-weighted rate"}
    for name, label in names.items():
        cards.append(f'<div class="card"><div>{label}</div><div class="big">{num(s, f"overall.{name}.rate")}</div>'
                     f'<div class="note">95% interval [{num(s, f"overall.{name}.low")}, {num(s, f"overall.{name}.high")}]</div></div>')
    o = s["overall"]
    traffic = "" if s.get("traffic") else " (the log has no impressions or count column: equal to the unweighted rate)"
    return ("<h2>Headline</h2><div class=\"cards\">" + "".join(cards) + "</div>"
            f"<p>Expected defects {num(s, 'overall.expected_defects', 1)} of {num(s, 'overall.shown', 0)} scored pairs. "
            f"At the model's threshold {num(s, 'overall.flagged', 0)} pairs are flagged "
            f"(rate {num(s, 'overall.at_threshold.rate')}): a count at an F1-tuned threshold overstates the rate, "
            f"so the headline uses calibrated probabilities.{traffic}</p>"
            + (f"<p><b>{num(s, 'overall.missing', 0)} shown pairs name products missing from the catalogue</b> "
               "and are not in any rate (see below).</p>" if o.get("missing") else "")
            + (f"<p><b>{num(s, 'skipped_rows.rows', 0)} rows of the log had a bad cell and were left out</b> of every rate and of "
               f"scored.parquet (--invalid-rows skip; each with its reason in {escape(s['skipped_rows']['file'])}).</p>"
               if (s.get("skipped_rows") or {}).get("rows") else ""))


def _positions(s: dict) -> str:
    rows = s.get("positions") or []
    if not rows:
        return ""
    plt = pyplot()
    pos = np.array([r["position"] for r in rows])
    rate = np.array([np.nan if r["defect_rate"] is None else r["defect_rate"] for r in rows])
    low = np.array([np.nan if r["rate_low"] is None else r["rate_low"] for r in rows])
    high = np.array([np.nan if r["rate_high"] is None else r["rate_high"] for r in rows])
    flagged = np.array([np.nan if r["flagged_rate"] is None else r["flagged_rate"] for r in rows])
    fig, ax = plt.subplots(figsize=(8, 3.5))
    ax.fill_between(pos, low, high, color="C0", alpha=0.2, label="95% interval")
    ax.plot(pos, rate, "o-", color="C0", ms=3, label="expected defect rate")
    ax.plot(pos, flagged, ":", color="C3", label="flagged at threshold")
    ax.set_xlabel("position on the result page")
    ax.set_ylabel("defect rate")
    ax.set_ylim(0, None)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    table = "".join(f"<tr><td>{num(s, f'positions.{i}.position', 0)}</td><td>{num(s, f'positions.{i}.shown', 0)}</td>"
                    f"<td>{num(s, f'positions.{i}.defect_rate')}</td><td>{num(s, f'positions.{i}.flagged_rate')}</td></tr>"
                    for i in range(min(10, len(rows))))
    return ("<h2>Defect rate by position</h2>" + figure_img(fig)
            + "<table><tr><th>position</th><th>pairs</th><th>expected rate</th><th>flagged rate</th></tr>" + table + "</table>")


def _distribution(queries: pd.DataFrame) -> str:
    rates = queries["defect_rate"].dropna().to_numpy()
    if not len(rates):
        return ""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 3.2))
    ax.hist(rates, bins=np.linspace(0, 1, 21), color="C0", edgecolor="white")
    ax.set_xlabel("expected defect rate of a query")
    ax.set_ylabel("queries")
    ax.grid(alpha=0.3)
    q50, q90 = np.percentile(rates, [50, 90])
    return (f"<h2>Distribution over queries</h2>{figure_img(fig)}<p>Median query: {q50:.{DIGITS}f}; 90th percentile: {q90:.{DIGITS}f}; "
            f"{int((rates >= 0.5).sum()):,} of {len(rates):,} queries have an expected rate of 0.5 or more.</p>")


def _worst(s: dict) -> str:
    rows = s.get("worst_queries") or []
    if not rows:
        return ""
    body = []
    for i, q in enumerate(rows):
        products = "<br>".join(
            f"#{p['position']} {escape(p['title'] or p['product_key'])} <span class=\"note\">({p['defect_probability']:.2f}"
            f"{', flagged' if p['is_defect'] else ''})</span>" for p in q["defect_products"])
        body.append(f"<tr><td class=\"t\">{escape(q['query'])}</td><td>{num(s, f'worst_queries.{i}.shown', 0)}</td>"
                    f"<td>{num(s, f'worst_queries.{i}.defect_rate')}</td>"
                    f"<td>[{num(s, f'worst_queries.{i}.rate_low')}, {num(s, f'worst_queries.{i}.rate_high')}]</td>"
                    f"<td>{num(s, f'worst_queries.{i}.flagged', 0)}</td><td>{fmt(q['traffic'], 0) if q['traffic'] is not None else '–'}</td>"
                    f"<td class=\"t\">{products}</td></tr>")
    return ("<h2>Worst queries</h2><p class=\"note\">Ranked by the lower end of the 95% interval (the rate the query at least "
            "has), then by the rate; the likeliest defect products of each (position, title or id, probability).</p><table><tr><th class=\"t\">query</th><th>shown</th><th>rate</th>"
            "<th>95% interval</th><th>flagged</th><th>traffic</th><th class=\"t\">likeliest defects</th></tr>" + "".join(body) + "</table>")


def _groups(s: dict) -> str:
    out = []
    for column, groups in (s.get("by") or {}).items():
        if not groups:
            continue
        plt = pyplot()
        shown = groups[:20]
        fig, ax = plt.subplots(figsize=(8, 0.35 * len(shown) + 1))
        y = np.arange(len(shown))[::-1]
        rate = np.array([g["unweighted"]["rate"] if g["unweighted"]["rate"] is not None else np.nan for g in shown])
        low = np.array([g["unweighted"]["low"] if g["unweighted"]["low"] is not None else np.nan for g in shown])
        high = np.array([g["unweighted"]["high"] if g["unweighted"]["high"] is not None else np.nan for g in shown])
        ax.barh(y, rate, color="C0", alpha=0.7)
        ax.errorbar(rate, y, xerr=[np.nan_to_num(rate - low), np.nan_to_num(high - rate)], fmt="none", ecolor="k", capsize=3)
        ax.set_yticks(y, [g["value"] for g in shown])
        ax.set_xlabel("expected defect rate (95% interval)")
        ax.grid(alpha=0.3, axis="x")
        rows = "".join(
            f"<tr><td class=\"t\">{escape(g['value'])}</td><td>{num(s, f'by.{column}.{i}.queries', 0)}</td>"
            f"<td>{num(s, f'by.{column}.{i}.shown', 0)}</td><td>{num(s, f'by.{column}.{i}.unweighted.rate')} "
            f"[{num(s, f'by.{column}.{i}.unweighted.low')}, {num(s, f'by.{column}.{i}.unweighted.high')}]</td>"
            f"<td>{num(s, f'by.{column}.{i}.position_weighted.rate')}</td><td>{num(s, f'by.{column}.{i}.traffic_weighted.rate')}</td>"
            f"<td>{num(s, f'by.{column}.{i}.at_threshold.rate')}</td></tr>" for i, g in enumerate(groups))
        out.append(f"<h2>By {escape(column)}</h2>{figure_img(fig)}<table><tr><th class=\"t\">{escape(column)}</th><th>queries</th><th>pairs</th>"
                   "<th>rate [95%]</th><th>position-weighted</th><th>traffic-weighted</th><th>flagged rate</th></tr>" + rows + "</table>")
    return "".join(out)


def _missing(s: dict) -> str:
    m = s.get("missing_products") or {}
    if not m.get("rows"):
        return ""
    items = "".join(f"<li>{escape(p['product_key'])}: {p['rows']:,} rows</li>" for p in m["most_rows"])
    return (f"<h2>Products missing from the catalogue</h2><p>{num(s, 'missing_products.rows', 0)} shown pairs name "
            f"{num(s, 'missing_products.products', 0)} products that are neither in the cache/catalogue nor titled in the log; "
            f"they are left out of every rate. All are listed in <code>{escape(m['file'])}</code>; the most frequent:</p><ul>{items}</ul>")


def _baseline(s: dict) -> str:
    b = s.get("baseline")
    if not b:
        return ""
    rows = "".join(
        f"<tr><td class=\"t\">{name.replace('_', ' ')}</td><td>{num(s, f'baseline.overall.{name}.old')}</td>"
        f"<td>{num(s, f'baseline.overall.{name}.new')}</td><td>{num(s, f'baseline.overall.{name}.change')}</td>"
        f"<td>[{num(s, f'baseline.overall.{name}.low')}, {num(s, f'baseline.overall.{name}.high')}]</td></tr>"
        for name in ("unweighted", "position_weighted", "traffic_weighted", "at_threshold"))
    groups = ""
    for column, items in (b.get("by") or {}).items():
        groups += (f"<h3>Change by {escape(column)}</h3><table><tr><th class=\"t\">{escape(column)}</th><th>before</th><th>after</th><th>change</th>"
                   "<th>95% interval</th></tr>" + "".join(
                       f"<tr><td class=\"t\">{escape(g['value'])}</td><td>{num(s, f'baseline.by.{column}.{i}.unweighted.old')}</td>"
                       f"<td>{num(s, f'baseline.by.{column}.{i}.unweighted.new')}</td><td>{num(s, f'baseline.by.{column}.{i}.unweighted.change')}</td>"
                       f"<td>[{num(s, f'baseline.by.{column}.{i}.unweighted.low')}, {num(s, f'baseline.by.{column}.{i}.unweighted.high')}]</td></tr>"
                       for i, g in enumerate(items)) + "</table>")
    worse = "".join(
        f"<tr><td class=\"t\">{escape(w['query'])}</td><td>{num(s, f'baseline.worse.{i}.rate_old')}</td><td>{num(s, f'baseline.worse.{i}.rate_new')}</td>"
        f"<td>{num(s, f'baseline.worse.{i}.change')}</td><td>[{num(s, f'baseline.worse.{i}.change_low')}, {num(s, f'baseline.worse.{i}.change_high')}]</td></tr>"
        for i, w in enumerate(b.get("worse") or []))
    return (f"<h2>Before and after</h2><p>Baseline log {escape(Path(b['log']).name)}; queries in both: "
            f"{num(s, 'baseline.overall.queries_in_both', 0)}, only after: {num(s, 'baseline.overall.queries_only_new', 0)}, "
            f"only before: {num(s, 'baseline.overall.queries_only_old', 0)}. "
            f"{num(s, 'baseline.queries_worse', 0)} queries got worse and {num(s, 'baseline.queries_better', 0)} better "
            "(95% interval of the change entirely above / below 0).</p>"
            "<table><tr><th class=\"t\">rate</th><th>before</th><th>after</th><th>change</th><th>95% interval</th></tr>" + rows + "</table>"
            + groups + ("<h3>Queries that got worse</h3><table><tr><th class=\"t\">query</th><th>before</th><th>after</th><th>change</th>"
                        "<th>95% interval</th></tr>" + worse + "</table>" if worse else ""))


def _methods(s: dict) -> str:
    items = "".join(f"<li><b>{escape(k.replace('_', ' '))}</b>: {escape(v)}</li>" for k, v in (s.get("methods") or {}).items())
    return f"<h2>How these numbers are made</h2><ul class=\"note\">{items}</ul>"
