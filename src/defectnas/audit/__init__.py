"""Audit a search engine's results: defect rates per query, position and group, before and after a change.

Why a package: a search team asks "how many defects does our engine show, for which queries,
where on the page, and did last week's change help?", and a trained model with a cached
catalogue can answer it for every shown pair of a result log. ``defectnas audit`` does that.
Modules (lower layers — data, model, serving — never import this package):

- :mod:`.log`    — read a result log in batches (any table the readers take; OpenSearch UBI query events)
- :mod:`.score`  — score chunks of whole queries: queries encoded in batches, products from the cache; locally or on Ray
- :mod:`.memo`   — what a run has seen: each distinct pair's probability (scored once, reused), rows that repeat one
- :mod:`.rates`  — per-query / position / group sums, expected defect rates and their intervals, paired changes
- :mod:`.run`      — the loop: stream, score, then write scored.parquet, queries.csv, summary.json together
- :mod:`.baseline` — `--baseline-log`: change per query (paired on products), per group and overall (paired bootstrap)
- :mod:`.report` — report.html, self-contained (plots embedded as base64 PNG)
"""

from .run import AuditConfig, run_audit

__all__ = ["AuditConfig", "run_audit"]
