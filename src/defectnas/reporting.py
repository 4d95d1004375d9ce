"""Results tables and plots: what people would rather see than read.

Why one module: ``quickstart``, ``compare`` and the benchmarks all write the same kind of
table (one row per model: precision, recall, F1, …) as CSV, JSON and Markdown, and the same
PR-curve chart; writing them in one place keeps the files consistent and atomic.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from .storage import atomic_write_bytes, atomic_write_json, atomic_write_text


def markdown_table(rows: Sequence[dict], columns: Sequence[str], digits: int = 3) -> str:
    """A GitHub-flavoured Markdown table of ``rows`` (dicts) restricted to ``columns``."""
    def cell(v) -> str:
        if isinstance(v, float):
            return f"{v:.{digits}f}"
        return str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" if c == columns[0] else "---:" for c in columns) + "|"]
    lines += ["| " + " | ".join(cell(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def text_table(rows: Sequence[dict], columns: Sequence[str], digits: int = 3) -> str:
    """An aligned plain-text table for the terminal."""
    def cell(v) -> str:
        return f"{v:.{digits}f}" if isinstance(v, float) else str(v)

    grid = [list(columns)] + [[cell(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(row[i]) for row in grid) for i in range(len(columns))]
    out = []
    for j, row in enumerate(grid):
        out.append("  ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(row, widths))))
        if j == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def write_results(out_dir: str | Path, rows: Sequence[dict], columns: Sequence[str], stem: str = "results") -> None:
    """``results.csv``, ``results.json`` and ``results.md`` in ``out_dir``."""
    out = Path(out_dir)
    buf = io.StringIO()
    pd.DataFrame(list(rows))[list(columns)].to_csv(buf, index=False)
    atomic_write_text(out / f"{stem}.csv", buf.getvalue())
    atomic_write_json(out / f"{stem}.json", list(rows))
    atomic_write_text(out / f"{stem}.md", markdown_table(rows, columns) + "\n")


def _save_figure(fig, path: str | Path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120, bbox_inches="tight")
    atomic_write_bytes(path, buf.getvalue())


def plot_pr_curves(curves: dict[str, tuple[np.ndarray, np.ndarray]], path: str | Path, title: str = "Defect precision–recall") -> None:
    """One chart with a precision–recall curve per model: {name: (labels, probabilities)}."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import average_precision_score, precision_recall_curve

    fig, ax = plt.subplots(figsize=(6, 5))
    base_rate = None
    for name, (labels, probs) in curves.items():
        precision, recall, _ = precision_recall_curve(labels, probs)
        ap = average_precision_score(labels, probs)
        ax.plot(recall, precision, label=f"{name} (AP {ap:.3f})")
        base_rate = float(np.mean(labels))
    if base_rate is not None:
        ax.axhline(base_rate, color="grey", linestyle=":", label=f"defect rate {base_rate:.3f}")
    ax.set_xlabel("recall (defects found)")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_title(title)
    ax.legend(loc="upper right", fontsize=8)
    ax.grid(alpha=0.3)
    _save_figure(fig, path)
    plt.close(fig)


def plot_reliability_models(labels: np.ndarray, probs: dict[str, np.ndarray], path: str | Path,
                            title: str = "Reliability on the test split") -> None:
    """Every model's reliability curve on one chart (10 equal-width bins, ECE in the legend): how
    far each model's ``defect_probability`` is from the observed defect rate, compared."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .training.metrics import expected_calibration_error, reliability_bins

    fig, ax = plt.subplots(figsize=(5.5, 5.5))
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", label="perfectly calibrated")
    for i, (name, p) in enumerate(probs.items()):
        bins = [b for b in reliability_bins(labels, p) if b["n"]]
        ax.plot([b["mean_probability"] for b in bins], [b["defect_rate"] for b in bins], color=f"C{i % 10}", marker="o", markersize=3,
                label=f"{name} (ECE {expected_calibration_error(labels, p):.3f})")
    ax.set_xlabel("mean predicted defect probability")
    ax.set_ylabel("observed defect rate")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_title(title, fontsize=9)
    ax.legend(loc="upper left", fontsize=7)
    ax.grid(alpha=0.3)
    _save_figure(fig, path)
    plt.close(fig)


def plot_reliability(labels: np.ndarray, probs: np.ndarray, path: str | Path, title: str = "Reliability") -> None:
    """Reliability diagram: defect rate against mean probability in 10 equal-width bins (marker
    area ∝ pairs), the diagonal, and the ECE and Brier score in the title."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import brier_score_loss

    from .training.metrics import expected_calibration_error, reliability_bins

    bins = [b for b in reliability_bins(labels, probs) if b["n"]]
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", label="perfectly calibrated")
    if bins:
        n = np.array([b["n"] for b in bins], dtype=float)
        ax.plot([b["mean_probability"] for b in bins], [b["defect_rate"] for b in bins], color="C0", marker="")
        ax.scatter([b["mean_probability"] for b in bins], [b["defect_rate"] for b in bins], s=20 + 280 * n / n.max(), color="C0",
                   label="bins (area ∝ pairs)", zorder=3)
    ece = expected_calibration_error(labels, probs)
    brier = brier_score_loss(np.asarray(labels).astype(int), np.clip(probs, 0, 1), pos_label=1) if len(labels) else 0.0
    ax.set_xlabel("mean predicted defect probability")
    ax.set_ylabel("observed defect rate")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_title(f"{title}: ECE {ece:.3f} (10 bins), Brier {brier:.3f}", fontsize=9)
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(alpha=0.3)
    _save_figure(fig, path)
    plt.close(fig)
