"""The status page's HTML: numbers, tables and sparklines, and the sign-in form.

Pure functions from values to markup; every value is escaped here. Nothing is loaded from
anywhere (the CSS is inline, a sparkline is a few lines of inline SVG), no script runs, so
the page works without internet, without JavaScript and under a strict CSP.

Every number and sparkline carries a ``data-testid``; a sparkline also carries
``data-points`` (how many values it draws) and ``data-max`` (the largest), so a test, or a
person with the inspector open, can tell an empty line from one of zeros.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime
from html import escape

NO_DATA = "no data yet"
SPARK_WIDTH, SPARK_HEIGHT, _PAD = 160, 34, 3


def sparkline(values: Sequence[float | None], *, testid: str, label: str) -> str:
    """``values`` (oldest first) as one small line, the last value marked; None and
    non-finite values are left out. With nothing to draw it says so."""
    drawn = [
        (index, value)
        for index, value in enumerate(values)
        if value is not None and math.isfinite(value)
    ]
    if not drawn:
        return (
            f'<span class="spark none" data-testid="{escape(testid)}" data-points="0" '
            f'data-max="0">{NO_DATA}</span>'
        )
    low = min(0.0, *(value for _, value in drawn))
    high = max(value for _, value in drawn)
    x_step = (SPARK_WIDTH - 2 * _PAD) / max(len(values) - 1, 1)
    y_scale = (SPARK_HEIGHT - 2 * _PAD) / ((high - low) or 1.0)
    placed = [
        (_PAD + x_step * index, SPARK_HEIGHT - _PAD - y_scale * (value - low))
        for index, value in drawn
    ]
    last_x, last_y = placed[-1]
    summary = f"{label}: {len(drawn)} values, last {_short(drawn[-1][1])}, highest {_short(high)}"
    return (
        f'<svg class="spark" data-testid="{escape(testid)}" data-points="{len(drawn)}" '
        f'data-max="{high:g}" viewBox="0 0 {SPARK_WIDTH} {SPARK_HEIGHT}" width="{SPARK_WIDTH}" '
        f'height="{SPARK_HEIGHT}" role="img" aria-label="{escape(summary)}">'
        f"<title>{escape(summary)}</title>"
        f'<polyline points="{" ".join(f"{x:.1f},{y:.1f}" for x, y in placed)}"/>'
        f'<circle cx="{last_x:.1f}" cy="{last_y:.1f}" r="2.5"/></svg>'
    )


def _short(value: float) -> str:
    return f"{value:.3g}" if abs(value) < 10_000 else f"{value:,.0f}"


def stat(label: str, value: str, *, testid: str, trend: str = "") -> str:
    """One number with its label, and a sparkline of its recent values when there is one."""
    return (
        f'<div class="stat" data-testid="{escape(testid)}" data-value="{escape(value)}">'
        f"<b>{escape(value)}</b><span>{escape(label)}</span>{trend}</div>"
    )


def stats(*cards: str) -> str:
    return f'<div class="stats">{"".join(cards)}</div>'


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], *, testid: str) -> str:
    """A plain table; cells are escaped here."""
    head = "".join(f"<th>{escape(header)}</th>" for header in headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{escape(cell)}</td>" for cell in row) + "</tr>" for row in rows
    )
    if not rows:
        body = f'<tr><td colspan="{len(headers)}" class="empty">{NO_DATA}</td></tr>'
    return (
        f'<table data-testid="{escape(testid)}" data-rows="{len(rows)}">'
        f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    )


def section(title: str, *content: str, note: str = "") -> str:
    explanation = f'<p class="note">{escape(note)}</p>' if note else ""
    return f"<section><h2>{escape(title)}</h2>{explanation}{''.join(content)}</section>"


def clock(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S") if moment else "—"


_CSS = """
*{box-sizing:border-box}
body{margin:0;padding:16px 24px;font:14px/1.4 system-ui,-apple-system,"Segoe UI",sans-serif;
  color:#0f172a;background:#f8fafc}
header{display:flex;align-items:baseline;gap:16px;flex-wrap:wrap}
header form{margin-left:auto}
h1{font-size:20px;margin:0 0 4px}h2{font-size:16px;margin:0 0 6px}
header span{color:#475569}
section{background:#fff;border:1px solid #e2e8f0;border-radius:8px;padding:10px 14px;
  margin:10px 0}
.note{color:#475569;margin:0 0 8px;font-size:12px}
table{border-collapse:collapse;width:100%;font-size:12px;margin-bottom:8px}
th,td{text-align:left;padding:4px 8px;border-bottom:1px solid #e2e8f0;vertical-align:top}
th{background:#f1f5f9}td.empty{color:#94a3b8;text-align:center}
.stats{display:flex;gap:10px;flex-wrap:wrap;margin-bottom:8px}
.stat{border:1px solid #e2e8f0;border-radius:6px;padding:6px 10px;min-width:120px}
.stat b{display:block;font-size:18px}.stat span{display:block;color:#475569;font-size:12px}
.spark{display:block;margin-top:4px}
.spark polyline{fill:none;stroke:#2563eb;stroke-width:1.5}.spark circle{fill:#2563eb}
.spark.none{color:#94a3b8;font-size:12px}
form.signin{max-width:360px;display:flex;flex-direction:column;gap:8px}
input{font:inherit;padding:6px 8px}button{font:inherit;padding:4px 12px}
.error{color:#b91c1c}
"""


def _document(title: str, body: str) -> str:
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        # Same-origin: the forms' POSTs then carry this page's Origin (no-referrer sends "null",
        # and browsers without Sec-Fetch-Site would have nothing else to show where they come
        # from); nothing here links elsewhere.
        '<meta name="referrer" content="same-origin">'
        f"<title>{escape(title)}</title><style>{_CSS}</style></head><body>{body}</body></html>"
    )


def page(*, title: str, subtitle: str, sections: Sequence[str], sign_out: str | None) -> str:
    """The status page; ``sign_out`` is the logout form's action, when signed in by a session."""
    button = (
        f'<form method="post" action="{escape(sign_out)}"><button>Sign out</button></form>'
        if sign_out
        else ""
    )
    header = f"<header><h1>{escape(title)}</h1><span>{escape(subtitle)}</span>{button}</header>"
    return _document(title, header + "".join(sections))


def sign_in_page(*, action: str, error: str | None = None, notice: str | None = None) -> str:
    """The sign-in form: the key goes in the POST body, never in a URL."""
    message = ""
    if error:
        message = f'<p class="error" data-testid="sign-in-error">{escape(error)}</p>'
    elif notice:
        message = f'<p class="note" data-testid="sign-in-notice">{escape(notice)}</p>'
    form = (
        f'<form class="signin" method="post" action="{escape(action)}" data-testid="sign-in">'
        '<label for="key">API key (role viewer or admin)</label>'
        '<input id="key" name="key" type="password" autocomplete="current-password" '
        'required maxlength="1024" autofocus>'
        "<button>Sign in</button></form>"
    )
    body = (
        "<header><h1>recsys status</h1></header><section><h2>Sign in</h2>"
        f"{message}{form}"
        '<p class="note">The key is sent in the form body and kept nowhere; the browser keeps '
        "a signed session cookie for this page only.</p></section>"
    )
    return _document("recsys status: sign in", body)
