"""The search's pictures: reward over time, accuracy against latency, reward against noise, and what it delivers.

Why: a table of trials does not show whether the strategy learned anything, what accuracy costs
in time, or which differences are noise. ``rewards.png`` shows the first (reward per trial, the
mean per step and its moving average — the paper's Figure 5), ``pareto.png`` the second (every
trained child, the non-dominated ones joined, train's default starred), ``noise.png`` the third
(each architecture ± its seed spread against the default ± the noise floor); ``final.png``, drawn
after the retrains, what the search delivers (retrained models and the distilled one). Drawn with
matplotlib's Agg backend (no display) and written atomically.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Sequence

from ..storage import atomic_write_bytes


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the (latency, f1) points no other point beats on both (lower latency, higher F1)."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best_f1 = [], float("-inf")
    for i in order:
        if points[i][1] > best_f1:
            front.append(i)
            best_f1 = points[i][1]
    return front


def moving_average(values: Sequence[float], decay: float) -> list[float]:
    """The exponential moving average the REINFORCE baseline keeps (started at the first value)."""
    out, avg = [], None
    for v in values:
        avg = v if avg is None else decay * avg + (1 - decay) * v
        out.append(avg)
    return out


def _figure():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt, plt.subplots(figsize=(7, 4))


def _save(plt, fig, path: str | Path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def plot_rewards(records: Sequence[dict[str, Any]], path: str | Path, decay: float = 0.9, title: str = "",
                 floor: dict[str, Any] | None = None) -> None:
    """Reward per trial (cached repeats hollow), the mean per strategy step with its moving average
    (the paper's Figure 5), and the default architecture's reward ± the noise floor as a band."""
    plt, (fig, ax) = _figure()
    trained = [r for r in records if not r.get("cached")]
    repeats = [r for r in records if r.get("cached")]
    ax.scatter([r["trial"] for r in trained], [r["reward"] for r in trained], s=10, color="tab:blue", alpha=0.5, label="child")
    if repeats:
        ax.scatter([r["trial"] for r in repeats], [r["reward"] for r in repeats], s=10, facecolors="none",
                   edgecolors="tab:blue", alpha=0.5, label="cached repeat")
    steps: dict[int, list[dict[str, Any]]] = {}
    for r in records:
        steps.setdefault(int(r.get("step", 0)), []).append(r)
    xs = [max(r["trial"] for r in rs) for _, rs in sorted(steps.items())]
    means = [sum(r["reward"] for r in rs) / len(rs) for _, rs in sorted(steps.items())]
    if len(means) > 1:  # one step has no curve to draw
        ax.plot(xs, means, color="tab:green", lw=1, alpha=0.8, label="mean reward per step")
        ax.plot(xs, moving_average(means, decay), color="tab:orange", lw=2, label=f"moving average ({decay})")
    _floor_band(ax, floor, "reward_search_seeds")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_xlabel("trial (in the order sampled)")
    ax.set_ylabel("reward")
    ax.set_title(title or "Architecture search: reward per step")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    _save(plt, fig, path)


def _floor_band(ax, floor: dict[str, Any] | None, key: str) -> None:
    """The default architecture's value and ± 2 × the noise floor (std of a K-seed mean)."""
    if not floor or floor.get(key) is None:
        return
    y = float(floor[key])
    ax.axhline(y, color="black", lw=1, ls="--", label="train's default")
    if floor.get("std_of_mean"):
        s = 2 * float(floor["std_of_mean"])
        ax.axhspan(y - s, y + s, color="gray", alpha=0.2, label="default ± 2 × noise floor")


def plot_pareto(records: Sequence[dict[str, Any]], path: str | Path, title: str = "", floor: dict[str, Any] | None = None,
                metric: str = "ap") -> None:
    """Validation metric against served latency for every trained child; the Pareto front and train's default marked."""
    plt, (fig, ax) = _figure()
    trained = [r for r in records if not r.get("cached")]
    points = [(float(r["latency_ms"]), float(r.get("metric", r.get("f1", 0.0)))) for r in trained]
    front = sorted(pareto_front(points), key=lambda i: points[i][0])
    ax.scatter([p[0] for p in points], [p[1] for p in points], s=12, color="tab:gray", alpha=0.6, label="child")
    if front:
        fx, fy = zip(*(points[i] for i in front))
        ax.plot(fx, fy, "-o", color="tab:red", ms=5, lw=1.5, label="Pareto front")
    if floor and floor.get("metric_search_seeds") is not None:
        ax.scatter([floor["latency_ms"]], [floor["metric_search_seeds"]], marker="*", s=160, color="black", zorder=5,
                   label="train's default")
    ax.set_xlabel("served latency: 1 query × 100 cached products, ms (1 CPU thread)")
    ax.set_ylabel(f"validation {metric.upper()} (mean over child seeds)")
    ax.set_title(title or "Architecture search: accuracy against served latency")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    _save(plt, fig, path)


def plot_final(rows: Sequence[dict[str, Any]], path: str | Path, title: str = "") -> None:
    """What the search delivers: every retrained model (and the distilled one) by test AP — or
    validation metric when there is no test split — against served latency; the installed front
    (``pareto/<n>/``) labelled, train's default starred, ``best/`` ringed and the student linked to
    its teacher. Why a second picture: ``pareto.png`` shows children at the child budget, whose
    metric is not on the retrained models' scale (``final.png``'s ``rows``: final.json's candidates)."""
    plt, (fig, ax) = _figure()
    has_test = all(r.get("test_ap") is not None for r in rows)
    value = (lambda r: float(r["test_ap"])) if has_test else (lambda r: float(r["valid_metric"]))
    plain = [r for r in rows if "distilled" not in r.get("roles", ())]
    ax.scatter([r["latency_ms"] for r in plain], [value(r) for r in plain], s=18, color="tab:gray", label="retrained candidate")
    front = sorted((r for r in rows if r.get("pareto_dir")), key=lambda r: r["latency_ms"])
    if front:  # points, not a line: picked at the child budget, they need not be a front on this plot's axes once retrained
        ax.scatter([r["latency_ms"] for r in front], [value(r) for r in front], s=36, color="tab:red", zorder=4,
                   label="pareto/<n>/ (picked on validation, at the child budget)")
        for r in front:
            ax.annotate(Path(r["pareto_dir"]).name, (r["latency_ms"], value(r)), textcoords="offset points", xytext=(5, 4),
                        fontsize=8, color="tab:red")
    for r in rows:
        if "default" in r.get("roles", ()):
            ax.scatter([r["latency_ms"]], [value(r)], marker="*", s=160, color="black", zorder=5, label="train's default (retrained)")
        if r.get("best"):
            ax.scatter([r["latency_ms"]], [value(r)], s=140, facecolors="none", edgecolors="tab:blue", lw=2, zorder=6, label="best/")
    for r in rows:
        if "distilled" not in r.get("roles", ()):
            continue
        ax.scatter([r["latency_ms"]], [value(r)], marker="D", s=60, color="tab:green", zorder=7, label="distilled/ (query tower; one seed)")
        seed_value = r.get("teacher_test_ap_seed" if has_test else "teacher_valid_ap_seed")
        if seed_value is not None and r.get("teacher_latency_ms"):  # the teacher as distilled: best/'s saved seed, timed beside it
            teacher = (float(r["teacher_latency_ms"]), float(seed_value))
            ax.scatter([teacher[0]], [teacher[1]], marker="D", s=60, facecolors="none", edgecolors="tab:green", zorder=7,
                       label="its teacher (best/'s saved seed)")
            ax.annotate("", xy=(r["latency_ms"], value(r)), xytext=teacher, arrowprops={"arrowstyle": "->", "color": "tab:green", "lw": 1})
    ax.set_xlabel("served latency: 1 query × 100 cached products, ms (1 CPU thread)")
    ax.set_ylabel("test AP (mean over retrain seeds)" if has_test else "validation metric (mean over retrain seeds)")
    ax.set_title(title or "Retrained models: accuracy against served latency")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    _save(plt, fig, path)


def noise_title(floor: dict[str, Any] | None) -> str:
    """``noise.png``'s title: what the band means, or, when no band is drawn (no noise floor, or one
    repeat, which has no spread between seed sets), that differences cannot be told from noise here."""
    if floor and floor.get("std_of_mean"):
        return "Reward against the noise floor: differences inside the band are seed noise"
    why = "one seed set, no spread between sets" if floor and floor.get("repeats") else "--noise-repeats 0"
    return f"Reward per architecture: no noise floor measured ({why}), so no band:\ndifferences here cannot be told from seed noise"


def plot_noise(records: Sequence[dict[str, Any]], path: str | Path, floor: dict[str, Any] | None = None, metric: str = "ap") -> None:
    """Each trained architecture's metric ± its seed spread, sorted, against the noise floor band."""
    plt, (fig, ax) = _figure()
    trained = sorted((r for r in records if not r.get("cached")), key=lambda r: r.get("metric", 0.0))
    ys = [float(r.get("metric", 0.0)) for r in trained]
    errs = [float(r.get("spread") or 0.0) for r in trained]
    ax.errorbar(range(len(ys)), ys, yerr=errs, fmt="o", ms=3, lw=0.8, color="tab:blue", ecolor="tab:blue", alpha=0.7,
                label="architecture: mean ± seed std")
    _floor_band(ax, floor, "metric_search_seeds")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_xlabel("architecture (sorted by its mean)")
    ax.set_ylabel(f"validation {metric.upper()}")
    ax.set_title(noise_title(floor))
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    _save(plt, fig, path)
