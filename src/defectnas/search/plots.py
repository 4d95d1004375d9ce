"""The search's two pictures: reward over time, and F1 against latency with the Pareto front.

Why: a table of 200 trials does not show whether the controller learned anything or what
accuracy costs in time; ``rewards.png`` shows the first (reward per trial with the moving
average the baseline tracks), ``pareto.png`` the second (every trained child, the
non-dominated ones highlighted). Both are drawn with matplotlib's Agg backend (no display) and
written atomically.
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


def plot_rewards(records: Sequence[dict[str, Any]], path: str | Path, decay: float = 0.9, title: str = "") -> None:
    """Reward per trial (cached repeats hollow) and its moving average."""
    plt, (fig, ax) = _figure()
    trials = [r["trial"] for r in records]
    rewards = [r["reward"] for r in records]
    trained = [r for r in records if not r.get("cached")]
    repeats = [r for r in records if r.get("cached")]
    ax.scatter([r["trial"] for r in trained], [r["reward"] for r in trained], s=12, color="tab:blue", label="child")
    if repeats:
        ax.scatter([r["trial"] for r in repeats], [r["reward"] for r in repeats], s=12, facecolors="none",
                   edgecolors="tab:blue", label="cached repeat")
    if rewards:
        ax.plot(trials, moving_average(rewards, decay), color="tab:orange", lw=2, label=f"moving average ({decay})")
    ax.set_xlabel("trial (controller samples, in order)")
    ax.set_ylabel("reward")
    ax.set_title(title or "Architecture search: reward per child")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    _save(plt, fig, path)


def plot_pareto(records: Sequence[dict[str, Any]], path: str | Path, title: str = "") -> None:
    """Validation F1 against measured latency for every trained child; Pareto front highlighted."""
    plt, (fig, ax) = _figure()
    trained = [r for r in records if not r.get("cached")]
    points = [(float(r["latency_ms"]), float(r["f1"])) for r in trained]
    front = pareto_front(points)
    ax.scatter([p[0] for p in points], [p[1] for p in points], s=12, color="tab:gray", alpha=0.6, label="child")
    if front:
        fx, fy = zip(*(points[i] for i in front))
        ax.plot(fx, fy, "-o", color="tab:red", ms=5, lw=1.5, label="Pareto front")
    ax.set_xlabel("latency: title encoding + scoring, ms per 100 pairs (1 CPU thread)")
    ax.set_ylabel("validation F1")
    ax.set_title(title or "Architecture search: F1 against latency")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    _save(plt, fig, path)
