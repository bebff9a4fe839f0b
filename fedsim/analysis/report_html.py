"""HTML building blocks of the report: inline PNG figures, tables, cards and notes."""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence

import pandas as pd
from matplotlib.figure import Figure

__all__ = ["figure_to_base64_png", "figure_html", "table_html", "cards_html", "note_html"]


def figure_to_base64_png(fig: Figure, dpi: int = 100) -> str:
    """Return ``fig`` as a base64-encoded PNG string."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def figure_html(fig: Figure, alt: str, caption: str) -> str:
    """Return ``fig`` as an inline ``<figure>`` with its caption (both HTML-escaped)."""
    data = figure_to_base64_png(fig)
    return (
        f'<figure><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>\n"
    )


def table_html(frame: pd.DataFrame, index: bool = False) -> str:
    """Return ``frame`` as an HTML table (``label`` reads ``configuration``, NaN ``n/a``)."""
    frame = frame.rename(columns={"label": "configuration"})
    return (
        frame.to_html(
            index=index, na_rep="n/a", border=0, escape=True, float_format=lambda x: f"{x:,.4g}"
        )
        + "\n"
    )


def cards_html(cards: Sequence[tuple[str, str]]) -> str:
    """Return ``(title, value)`` pairs as a row of key-figure cards."""
    return (
        '<div class="cards">'
        + "".join(
            f'<div class="card">{html.escape(k)}<b>{html.escape(v)}</b></div>' for k, v in cards
        )
        + "</div>\n"
    )


def note_html(text: str) -> str:
    """Return a paragraph of class ``note``; ``text`` is HTML (escape what needs it)."""
    return f'<p class="note">{text}</p>\n'
