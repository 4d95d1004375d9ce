"""For rating teams: which pairs raters should judge next (``defectnas select``).

- :mod:`.selection`: uncertainty / disagreement × traffic, spread across queries, skipping what
  is already labelled; the Quepid rating layout.
"""

from .selection import Selection, quepid_table, select_pairs, uncertainty

__all__ = ["Selection", "quepid_table", "select_pairs", "uncertainty"]
