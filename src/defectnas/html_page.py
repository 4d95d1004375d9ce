"""Self-contained HTML pages: the pieces ``audit``'s and ``search``'s report.html share.

Why a module of its own: a page a search manager opens from a shared drive or an e-mail must work
without a network, so it carries its style inline and its plots as base64 PNG ``data:`` URIs,
and has no script. Every number a page takes from its JSON (summary.json, final.json) is printed
by :func:`num`, which tags it ``data-key="<dotted path>"``, so a test can check the page against
the file it summarises.
"""

from __future__ import annotations

import base64
import html
import io

DIGITS = 4  # decimals of every rate and metric on a page

STYLE = """body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1100px;color:#222;padding:0 1em}
h1{font-size:1.6em}h2{font-size:1.25em;margin-top:2em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ddd;padding:3px 8px;text-align:right;font-size:.9em}
th{background:#f4f4f4}td.t,th.t{text-align:left}.big{font-size:1.8em;font-weight:600}.note{color:#666;font-size:.9em}
.cards{display:flex;gap:1em;flex-wrap:wrap}.card{border:1px solid #ddd;border-radius:6px;padding:.8em 1.2em;min-width:230px}
img{max-width:100%}"""


def escape(text) -> str:
    """``text`` as HTML (quotes too: it may sit in an attribute)."""
    return html.escape(str(text), quote=True)


def fmt(value, digits: int = DIGITS) -> str:
    """A value as a page shows it: "–" for None and NaN, "yes"/"no", ints with thousands separators,
    floats to ``digits`` decimals — or two significant digits when that would round a non-zero
    value to 0 (a small change must not read as 0.0000)."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if value != value:  # NaN: nothing to show (e.g. a position no pair was shown at)
            return "–"
        if value != 0 and abs(value) < 0.5 * 10 ** -digits:
            return f"{value:.2g}"
        return f"{value:.{digits}f}"
    return escape(value)


def lookup(data: dict, key: str):
    """The value at dotted ``key`` of ``data`` (list items by index: ``"candidates.0.test_ap"``)."""
    value = data
    for part in key.split("."):
        value = value[int(part)] if isinstance(value, list) else value[part]
    return value


def num(data: dict, key: str, digits: int = DIGITS, signed: bool = False) -> str:
    """The value at dotted ``key`` of ``data``, formatted, in a span tagged with the key.

    ``signed``: a leading "+" on positive numbers (a difference)."""
    value = lookup(data, key)
    text = fmt(value, digits)
    if signed and isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
        text = "+" + text
    return f'<span data-key="{escape(key)}">{text}</span>'


def png_img(png: bytes, alt: str = "plot") -> str:
    """An ``<img>`` carrying ``png`` as a base64 data URI."""
    return f'<img alt="{escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}">'


def figure_img(fig) -> str:
    """A matplotlib figure as an embedded ``<img>`` (the figure is closed)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return png_img(buf.getvalue())


def pyplot():
    """matplotlib's pyplot on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def head(title: str, heading: str, note: str = "") -> str:
    """The page's start: doctype, title, inline style, the heading and a note line (HTML, not escaped)."""
    return (f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{escape(title)}</title>"
            f"<style>{STYLE}</style></head><body><h1>{escape(heading)}</h1>" + (f"<p class=\"note\">{note}</p>" if note else ""))


END = "</body></html>"
