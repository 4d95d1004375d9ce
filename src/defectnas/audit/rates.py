"""Defect rates of a scored result log: per query, per position, per group, overall, with intervals.

Why a module of its own: the audit's numbers are estimates, and how they are estimated must be
stated once. All rates are *expected* defect rates from calibrated probabilities p (expected
defects = Σp); counts at the model's threshold (``is_defect``) are kept beside them because at
an F1-tuned threshold a model flags several times as many pairs as are defects.

Rates (products missing from the catalogue are excluded from every rate and counted apart):

- unweighted: Σp / n over shown pairs;
- position-weighted: Σ w·p / Σ w with DCG's weights w = 1 / log2(1 + position)
  (1, 0.63, 0.5, 0.43, … — a defect at the top counts more);
- traffic-weighted: Σ t·p / Σ t with t = the row's ``impressions``, else its query's ``count``,
  else 1 (then it equals the unweighted rate).

Intervals (95%):

- per query: a normal approximation to the Poisson-binomial count of true defects — if the
  probabilities are calibrated, the number of defects among a query's n results has mean Σp and
  variance Σp(1−p), so the rate is Σp/n ± 1.96·√(Σp(1−p))/n (clipped to [0, 1]). It reflects
  which of the shown pairs happen to be defects, not the calibration error of the model.
- overall and per group: a Poisson bootstrap over queries (each query's sums weighted by a
  Poisson(1) draw, :data:`BOOTSTRAP` resamples, seeded, percentile interval), so the
  between-query spread — what a different week of traffic would show — is what is measured.
- changes (``--baseline-log``): per query the same normal approximation of the difference,
  paired where a product is shown for the query in both logs (same model, same pair, same
  unknown truth: the covariance term Σ p(1−p)/(n₁n₀) over shared products is subtracted); per
  group and overall the same Poisson bootstrap with one weight per query shared by both logs,
  so queries present in both are paired.

Queries are keyed by their normalised text (``_query``, as ``train`` and ``predict`` normalise
it); the probability sums are added as whole units of 2^-32 (:data:`EXACT`), so they do not depend
on how a log's rows are laid out or batched — together with each distinct pair being scored once
per run (:mod:`.memo`), an unchanged page has a change of exactly 0.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

Z95 = 1.959964
BOOTSTRAP = 1000  # bootstrap resamples of overall and per-group intervals
_BLOCK = 100  # resamples drawn at once (memory: _BLOCK × queries floats)
TOP_K = (1, 3, 10)
NOISE = 1e-6  # rate changes below this are float rounding (weighted sums added in another order), not a change
UNIT = 2.0 ** -32  # sums of probabilities are counted in whole units of this (see EXACT)

# per-(query) sums kept while reading the log; every rate is a ratio of two of them
SUMS = ["shown", "expected", "variance", "flagged", "pos_num", "pos_den", "traffic_num", "traffic_den",
        *[f"expected_top{k}" for k in TOP_K], *[f"flagged_top{k}" for k in TOP_K], "missing"]
MAXES = ["traffic"]
# sums kept as int64 counts of UNIT (each row's value rounded to 2^-32, ~2e-10) while reading: integer sums are exact, so a
# page's sums are the same however its rows are laid out or batched (float sums are not: pandas' grouped float sum of
# the same values in the same order differs in the last bit with the rows around them), and an unchanged page has a change
# of exactly 0. Traffic sums stay float: impressions are unbounded, and int64 units of them could overflow.
EXACT = ["expected", "variance", "pos_num", "pos_den", *[f"expected_top{k}" for k in TOP_K]]
RATES = {  # name: (numerator, denominator)
    "unweighted": ("expected", "shown"),
    "position_weighted": ("pos_num", "pos_den"),
    "traffic_weighted": ("traffic_num", "traffic_den"),
    "at_threshold": ("flagged", "shown"),
}


def position_weight(position: np.ndarray) -> np.ndarray:
    """DCG weight 1 / log2(1 + position) of 1-based positions."""
    return 1.0 / np.log2(1.0 + np.asarray(position, dtype=np.float64))


def row_sums(p: np.ndarray, flagged: np.ndarray, position: np.ndarray, weight: np.ndarray) -> pd.DataFrame:
    """Per-row contributions to :data:`SUMS` (missing products: p is NaN, counted in ``missing`` only)."""
    missing = np.isnan(p)
    ok = (~missing).astype(np.float64)
    q = np.where(missing, 0.0, p)
    f = np.where(missing, 0.0, flagged.astype(np.float64))
    w = position_weight(position) * ok
    out = {"shown": ok, "expected": q, "variance": q * (1 - q), "flagged": f, "pos_num": w * q, "pos_den": w,
           "traffic_num": weight * q, "traffic_den": weight * ok}
    for k in TOP_K:
        top = position <= k
        out[f"expected_top{k}"] = q * top
        out[f"flagged_top{k}"] = f * top
    out["missing"] = missing.astype(np.float64)
    out["traffic"] = weight
    for c in EXACT:
        out[c] = units(out[c])
    return pd.DataFrame(out)


def units(values: np.ndarray) -> np.ndarray:
    """Values as int64 counts of :data:`UNIT` (rounded): what :data:`EXACT` sums add up."""
    return np.rint(np.asarray(values, dtype=np.float64) / UNIT).astype(np.int64)


class Accumulator:
    """Sums of :data:`SUMS` (and maxima of :data:`MAXES`) by key columns, merged batch by batch;
    ``firsts``: columns of which the first value in log order is kept (the query's first spelling:
    queries are keyed by their normalised text, and an output shows how the log wrote one).

    Memory: one row per distinct key (queries, positions, group × query), not per log row."""

    def __init__(self, keys: list[str], firsts: tuple[str, ...] = ()) -> None:
        self.keys, self.firsts = keys, firsts
        self.parts: list[pd.DataFrame] = []
        self.rows = 0

    def add(self, frame: pd.DataFrame) -> None:
        part = _reduce(frame, self.keys, self.firsts)
        self.parts.append(part)
        self.rows += len(part)
        if len(self.parts) > 8 and self.rows > 4 * len(part):
            self.parts = [_reduce(pd.concat(self.parts, ignore_index=True), self.keys, self.firsts)]
            self.rows = len(self.parts[0])

    def result(self) -> pd.DataFrame:
        """The sums by key, :data:`EXACT` ones back in probability units (floats)."""
        if not self.parts:
            return pd.DataFrame(columns=self.keys + list(self.firsts) + SUMS + MAXES)
        out = _reduce(pd.concat(self.parts, ignore_index=True), self.keys, self.firsts)
        out[EXACT] = out[EXACT].to_numpy(dtype=np.int64) * UNIT
        return out


def _reduce(frame: pd.DataFrame, keys: list[str], firsts: tuple[str, ...] = ()) -> pd.DataFrame:
    agg = {c: "first" for c in firsts} | {c: "sum" for c in SUMS} | {c: "max" for c in MAXES}
    return frame.groupby(keys, sort=False, dropna=False, observed=True).agg(agg).reset_index()


def spelling(sums: pd.DataFrame) -> pd.Series:
    """How an output names each query of per-query sums: its first spelling in the log (the key,
    normalised, where the sums kept none)."""
    return sums["_query_text"] if "_query_text" in sums.columns else sums["_query"]


def query_table(sums: pd.DataFrame, has_traffic: bool) -> pd.DataFrame:
    """queries.csv: one row per query (columns in the README), worst expected rate first."""
    shown = sums["shown"].to_numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        rate = sums["expected"] / shown
        half = Z95 * np.sqrt(sums["variance"]) / shown
        out = pd.DataFrame({
            "query": spelling(sums),
            "query_key": sums["_query"],
            "shown": shown.astype(np.int64),
            "expected_defects": sums["expected"],
            "defect_rate": rate,
            "rate_low": (rate - half).clip(0, 1),
            "rate_high": (rate + half).clip(0, 1),
            "position_weighted_rate": sums["pos_num"] / sums["pos_den"],
            **{f"expected_defects_top{k}": sums[f"expected_top{k}"] for k in TOP_K},
            "flagged": sums["flagged"].astype(np.int64),
            "flagged_rate": sums["flagged"] / shown,
            **{f"flagged_top{k}": sums[f"flagged_top{k}"].astype(np.int64) for k in TOP_K},
            "traffic": sums["traffic"] if has_traffic else np.nan,
            "missing_products": sums["missing"].astype(np.int64),
        })
    return out.sort_values(["defect_rate", "traffic", "query"], ascending=[False, False, True], kind="stable",
                           na_position="last").reset_index(drop=True)


def poisson_weights(n_queries: int, seed: int, resamples: int = BOOTSTRAP):
    """Blocks of Poisson(1) bootstrap weights, (≤ _BLOCK, n_queries) each; seeded, reproducible."""
    rng = np.random.default_rng(seed)
    for start in range(0, resamples, _BLOCK):
        yield rng.poisson(1.0, size=(min(_BLOCK, resamples - start), n_queries)).astype(np.float64)


def ratio_with_interval(num: np.ndarray, den: np.ndarray, seed: int, resamples: int = BOOTSTRAP) -> dict:
    """{"rate", "low", "high"}: Σnum/Σden over queries and its 95% Poisson-bootstrap interval."""
    return ratios_with_intervals([(num, den)], seed, resamples)[0]


def ratios_with_intervals(pairs: list[tuple[np.ndarray, np.ndarray]], seed: int, resamples: int = BOOTSTRAP) -> list[dict]:
    """:func:`ratio_with_interval` of several (num, den) pairs over the same queries, from one set
    of bootstrap weights: the seeded weights are the same for each pair, so drawing them once
    gives each pair the interval it gets alone (the weights were most of the summary's time)."""
    pairs = [(np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64)) for num, den in pairs]
    out, live = [], []
    for i, (num, den) in enumerate(pairs):
        total = den.sum()
        out.append({"rate": float(num.sum() / total) if total > 0 else float("nan"), "low": float("nan"), "high": float("nan")})
        if len(num) >= 2 and total > 0:
            live.append(i)
    if not live:
        return out
    draws: dict[int, list[np.ndarray]] = {i: [] for i in live}
    for w in poisson_weights(len(pairs[live[0]][0]), seed, resamples):
        for i in live:
            num, den = pairs[i]
            d = w @ den
            with np.errstate(invalid="ignore", divide="ignore"):
                draws[i].append(np.where(d > 0, (w @ num) / d, np.nan))
    for i in live:
        low, high = np.nanpercentile(np.concatenate(draws[i]), [2.5, 97.5])
        out[i].update(low=float(low), high=float(high))
    return out


def rates_summary(sums: pd.DataFrame, seed: int) -> dict:
    """Overall rates of per-query sums: each of :data:`RATES` with its interval, plus totals."""
    found = ratios_with_intervals([(sums[a].to_numpy(), sums[b].to_numpy()) for a, b in RATES.values()], seed)
    out = dict(zip(RATES, found))
    out["queries"] = int(len(sums))
    out["shown"] = int(sums["shown"].sum())
    out["expected_defects"] = float(sums["expected"].sum())
    out["flagged"] = int(sums["flagged"].sum())
    out["missing"] = int(sums["missing"].sum())
    return out


def group_summaries(sums: pd.DataFrame, column: str, seed: int) -> list[dict]:
    """Per value of ``column`` (sums keyed by [column, _query]): :func:`rates_summary`, largest first."""
    out = []
    for value, part in sums.groupby(column, sort=False, dropna=False):
        out.append({"value": _label(value), **rates_summary(part, seed)})
    return sorted(out, key=lambda g: (-g["shown"], g["value"]))


def position_table(sums: pd.DataFrame) -> pd.DataFrame:
    """Per position: pairs shown, expected and at-threshold defect rates, Bernoulli-normal interval."""
    s = sums.sort_values("_position")
    with np.errstate(invalid="ignore", divide="ignore"):
        rate = s["expected"] / s["shown"]
        half = Z95 * np.sqrt(s["variance"]) / s["shown"]
        return pd.DataFrame({"position": s["_position"].astype(np.int64), "shown": s["shown"].astype(np.int64),
                             "defect_rate": rate, "rate_low": (rate - half).clip(0, 1), "rate_high": (rate + half).clip(0, 1),
                             "flagged_rate": s["flagged"] / s["shown"]}).reset_index(drop=True)


def _label(value) -> str:
    return "(missing)" if value is None or (isinstance(value, float) and value != value) else str(value)


# ------------------------------------------------------------------- changes
def paired_change(new: pd.DataFrame, old: pd.DataFrame, seed: int) -> dict:
    """Change (new − old) of each overall rate with a 95% Poisson-bootstrap interval over the
    union of queries, one weight per query for both logs (paired where a query is in both)."""
    cols = ["_query", *SUMS]
    merged = new[cols].merge(old[cols], on="_query", how="outer", suffixes=("_new", "_old")).fillna(0.0)
    out = {}
    for name, (a, b) in RATES.items():
        nn, nd = merged[f"{a}_new"].to_numpy(float), merged[f"{b}_new"].to_numpy(float)
        on, od = merged[f"{a}_old"].to_numpy(float), merged[f"{b}_old"].to_numpy(float)
        change = nn.sum() / nd.sum() - on.sum() / od.sum() if nd.sum() > 0 and od.sum() > 0 else float("nan")
        draws = []
        if len(merged) >= 2:
            for w in poisson_weights(len(merged), seed):
                with np.errstate(invalid="ignore", divide="ignore"):
                    draws.append((w @ nn) / (w @ nd) - (w @ on) / (w @ od))
        low, high = np.nanpercentile(np.concatenate(draws), [2.5, 97.5]) if draws else (float("nan"), float("nan"))
        out[name] = {"new": float(nn.sum() / nd.sum()) if nd.sum() else float("nan"),
                     "old": float(on.sum() / od.sum()) if od.sum() else float("nan"),
                     "change": float(change), "low": float(low), "high": float(high)}
    both = ((merged["shown_new"] > 0) & (merged["shown_old"] > 0))
    out["queries_in_both"] = int(both.sum())
    out["queries_only_new"] = int(((merged["shown_new"] > 0) & (merged["shown_old"] == 0)).sum())
    out["queries_only_old"] = int(((merged["shown_old"] > 0) & (merged["shown_new"] == 0)).sum())
    return out


def query_changes(new: pd.DataFrame, old: pd.DataFrame, shared: pd.DataFrame) -> pd.DataFrame:
    """changes.csv: per query, rate old/new and the change with its 95% interval (normal
    approximation; the covariance of products shown in both subtracted: ``shared`` holds per
    query Σ p(1−p) over products in both lists). ``worse`` when the whole interval is above
    :data:`NOISE`, ``better`` when it is below −NOISE.
    Sorted worst change first."""
    cols = ["_query", "shown", "expected", "variance", "traffic"]
    m = new[cols].assign(name=spelling(new)).merge(old[cols].assign(name=spelling(old)), on="_query", how="outer",
                                                   suffixes=("_new", "_old"))
    m = m.merge(shared, on="_query", how="left")
    m["shared_variance"] = m["shared_variance"].fillna(0.0)
    n1, n0 = m["shown_new"].to_numpy(float), m["shown_old"].to_numpy(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        r1, r0 = m["expected_new"] / n1, m["expected_old"] / n0
        var = m["variance_new"].fillna(0) / n1 ** 2 + m["variance_old"].fillna(0) / n0 ** 2 - 2 * m["shared_variance"] / (n1 * n0)
        half = Z95 * np.sqrt(np.clip(var, 0, None))
    change = r1 - r0
    out = pd.DataFrame({
        "query": m["name_new"].fillna(m["name_old"]), "query_key": m["_query"],  # as the new log spells it, else the old
        "shown_old": n0, "shown_new": n1, "rate_old": r0, "rate_new": r1, "change": change,
        "change_low": change - half, "change_high": change + half,
        "traffic": m["traffic_new"].fillna(m["traffic_old"]),
        "in": np.where(m["shown_new"].notna() & m["shown_old"].notna(), "both", np.where(m["shown_new"].notna(), "new", "old")),
    })
    out["worse"] = out["change_low"] > NOISE
    out["better"] = out["change_high"] < -NOISE
    return out.sort_values(["change", "query"], ascending=[False, True], na_position="last", kind="stable").reset_index(drop=True)
