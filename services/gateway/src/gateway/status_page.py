"""The operator status page: self-contained HTML with server-rendered inline SVG charts.

Nothing here touches Redis or the network: the route gathers the data, these pure functions turn
it into markup. The page loads no script, stylesheet or font from anywhere (the CSS is inline,
the charts are SVG), so it works on a machine without internet and under a strict CSP.

Every chart carries ``data-testid``, ``data-points`` (how many values it plots) and ``data-max``
(the largest of them), so a test — or a person with the inspector open — can tell an empty
chart, or one of zeros, from one that shows data.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from html import escape
from typing import Any

from prometheus_client import REGISTRY

Point = tuple[float, float]

WIDTH = 560
HEIGHT = 220
_MARGIN_LEFT, _MARGIN_RIGHT, _MARGIN_TOP, _MARGIN_BOTTOM = 58, 16, 30, 50
PALETTE = ("#2563eb", "#f59e0b", "#10b981", "#ef4444", "#8b5cf6", "#64748b")
NO_DATA = "no data yet"

LATENCY_METRIC = "http_request_duration_seconds"
CACHE_METRIC = "recsys_cache_requests"
PERCENTILES = (0.5, 0.95, 0.99)


# ── numbers ───────────────────────────────────────────────────────────────────────────────
def _format(value: float) -> str:
    """A short tick or value label: 0.0123 → 0.0123, 1234.5 → 1234.5, 12000 → 12k."""
    if value == 0:
        return "0"
    magnitude = abs(value)
    if magnitude >= 10_000:
        return f"{value / 1000:.0f}k"
    if magnitude >= 100:
        return f"{value:.0f}"
    return f"{value:.3g}"


def _nice_max(value: float) -> float:
    """The smallest 1, 2, 2.5 or 5 × 10^n at or above ``value`` (an axis top)."""
    if value <= 0 or not math.isfinite(value):
        return 1.0
    exponent = math.floor(math.log10(value))
    for step in (1.0, 2.0, 2.5, 5.0, 10.0):
        top = step * 10.0**exponent
        if top >= value * (1 - 1e-9):
            return top
    return 10.0 ** (exponent + 1)  # pragma: no cover - the loop always returns


def histogram_quantile(quantile: float, buckets: Sequence[tuple[float, float]]) -> float | None:
    """A quantile from cumulative histogram buckets ``(upper bound, count)``, as Prometheus'
    ``histogram_quantile`` does: find the bucket holding the rank and interpolate linearly
    inside it (the first bucket starts at 0). A rank in the ``+Inf`` bucket gives the highest
    finite bound. None when nothing was observed."""
    ordered = sorted(buckets)
    if not ordered or ordered[-1][1] <= 0:
        return None
    total = ordered[-1][1]
    rank = quantile * total
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in ordered:
        if count >= rank:
            if math.isinf(bound):
                return lower_bound
            if count == lower_count:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (
                count - lower_count
            )
        lower_bound, lower_count = bound, count
    return lower_bound  # pragma: no cover - the last bucket holds every observation


# ── the gateway's own metrics ─────────────────────────────────────────────────────────────
@dataclass(frozen=True)
class RouteLatency:
    method: str
    route: str
    count: int
    percentiles: dict[float, float | None]


@dataclass(frozen=True)
class ProcessMetrics:
    cache: dict[str, int]
    latency: list[RouteLatency]

    @property
    def cache_hit_ratio(self) -> float | None:
        lookups = sum(self.cache.values())
        return self.cache.get("hit", 0) / lookups if lookups else None


def read_process_metrics(registry: Any = REGISTRY) -> ProcessMetrics:
    """Cache lookups by result and latency percentiles per route, from this process's
    Prometheus registry (what its ``/metrics`` shows)."""
    cache: dict[str, int] = {}
    buckets: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for family in registry.collect():
        if family.name == CACHE_METRIC:
            for sample in family.samples:
                if sample.name == f"{CACHE_METRIC}_total":
                    result = sample.labels.get("result", "unknown")
                    cache[result] = cache.get(result, 0) + int(sample.value)
        elif family.name == LATENCY_METRIC:
            for sample in family.samples:
                if sample.name == f"{LATENCY_METRIC}_bucket":
                    labels = (sample.labels.get("method", ""), sample.labels.get("route", ""))
                    bound = float(sample.labels["le"])
                    buckets.setdefault(labels, []).append((bound, float(sample.value)))
    latency = []
    for (method, template), series in buckets.items():
        count = int(max(count for _, count in series))
        if count:
            percentiles = {q: histogram_quantile(q, series) for q in PERCENTILES}
            latency.append(RouteLatency(method, template, count, percentiles))
    latency.sort(key=lambda entry: (-entry.count, entry.route, entry.method))
    return ProcessMetrics(cache=cache, latency=latency)


# ── charts ────────────────────────────────────────────────────────────────────────────────
def _frame(
    testid: str,
    title: str,
    points: int,
    body: str,
    *,
    width: int,
    height: int,
    legend: str = "",
    largest: float = 0.0,
) -> str:
    return (
        f'<figure class="chart" data-testid="{escape(testid)}" data-points="{points}" '
        f'data-max="{largest:g}">'
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" role="img" aria-label="{escape(title)}">'
        f'<text class="title" x="{width / 2:.0f}" y="18" text-anchor="middle">{escape(title)}'
        f"</text>{body}</svg>{legend}</figure>"
    )


def _empty(testid: str, title: str, *, width: int, height: int, note: str) -> str:
    body = (
        f'<text class="empty" x="{width / 2:.0f}" y="{height / 2:.0f}" '
        f'text-anchor="middle">{escape(note)}</text>'
    )
    return _frame(testid, title, 0, body, width=width, height=height)


def _axes(
    *, width: int, height: int, y_top: float, x_label: str, y_label: str, ticks: int = 4
) -> str:
    left, right = _MARGIN_LEFT, width - _MARGIN_RIGHT
    top, bottom = _MARGIN_TOP, height - _MARGIN_BOTTOM
    parts = [
        f'<line class="axis" x1="{left}" y1="{bottom}" x2="{right}" y2="{bottom}"/>',
        f'<line class="axis" x1="{left}" y1="{top}" x2="{left}" y2="{bottom}"/>',
    ]
    for index in range(ticks + 1):
        value = y_top * index / ticks
        y = bottom - (bottom - top) * index / ticks
        parts.append(f'<line class="grid" x1="{left}" y1="{y:.1f}" x2="{right}" y2="{y:.1f}"/>')
        parts.append(
            f'<text class="tick" x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">'
            f"{_format(value)}</text>"
        )
    parts.append(
        f'<text class="axis-label" x="{(left + right) / 2:.0f}" y="{height - 8}" '
        f'text-anchor="middle">{escape(x_label)}</text>'
    )
    middle = (top + bottom) / 2
    parts.append(
        f'<text class="axis-label" x="14" y="{middle:.0f}" text-anchor="middle" '
        f'transform="rotate(-90 14 {middle:.0f})">{escape(y_label)}</text>'
    )
    return "".join(parts)


def _legend(names: Iterable[str]) -> str:
    entries = "".join(
        f'<span><i style="background:{PALETTE[index % len(PALETTE)]}"></i>{escape(name)}</span>'
        for index, name in enumerate(names)
    )
    return f'<figcaption class="legend">{entries}</figcaption>'


def line_chart(
    series: Mapping[str, Sequence[Point]],
    *,
    title: str,
    x_label: str,
    y_label: str,
    testid: str,
    x_format: Any = _format,
    width: int = WIDTH,
    height: int = HEIGHT,
    empty_note: str = NO_DATA,
) -> str:
    """Lines through ``(x, y)`` points, one per named series, a circle marker on each point.
    ``data-points`` counts the markers; with no point at all the chart says ``empty_note``."""
    points = [point for values in series.values() for point in values]
    if not points:
        return _empty(testid, title, width=width, height=height, note=empty_note)
    xs = [x for x, _ in points]
    x_min, x_max = min(xs), max(xs)
    if x_max == x_min:
        x_min, x_max = x_min - 1, x_max + 1
    y_top = _nice_max(max(max(y for _, y in points), 0.0))
    left, right = _MARGIN_LEFT, width - _MARGIN_RIGHT
    top, bottom = _MARGIN_TOP, height - _MARGIN_BOTTOM

    def position(point: Point) -> tuple[float, float]:
        x, y = point
        return (
            left + (right - left) * (x - x_min) / (x_max - x_min),
            bottom - (bottom - top) * max(y, 0.0) / y_top,
        )

    parts = [_axes(width=width, height=height, y_top=y_top, x_label=x_label, y_label=y_label)]
    distinct = len(set(xs)) > 1
    labels = ((x_min, "start"), ((x_min + x_max) / 2, "middle"), (x_max, "end"))
    for label_x, anchor in labels if distinct else labels[1:2]:
        x, _ = position((label_x, 0.0))
        parts.append(
            f'<text class="tick" x="{x:.1f}" y="{bottom + 16}" text-anchor="{anchor}">'
            f"{escape(str(x_format(label_x)))}</text>"
        )
    for index, (name, values) in enumerate(series.items()):
        color = PALETTE[index % len(PALETTE)]
        placed = [position(point) for point in sorted(values)]
        if len(placed) > 1:
            path = " ".join(f"{x:.1f},{y:.1f}" for x, y in placed)
            parts.append(f'<polyline class="line" fill="none" stroke="{color}" points="{path}"/>')
        radius = 2.2 if len(placed) > 30 else 3.5
        for (x, y), (raw_x, raw_y) in zip(placed, sorted(values), strict=True):
            parts.append(
                f'<circle class="marker" cx="{x:.1f}" cy="{y:.1f}" r="{radius}" '
                f'fill="{color}"><title>{escape(name)} {escape(str(x_format(raw_x)))}: '
                f"{_format(raw_y)}</title></circle>"
            )
    return _frame(
        testid,
        title,
        len(points),
        "".join(parts),
        width=width,
        height=height,
        legend=_legend(series),
        largest=max(y for _, y in points),
    )


def bar_chart(
    labels: Sequence[str],
    series: Mapping[str, Sequence[float | None]],
    *,
    title: str,
    x_label: str,
    y_label: str,
    testid: str,
    value_format: Any = _format,
    width: int = WIDTH,
    height: int = HEIGHT,
    empty_note: str = NO_DATA,
) -> str:
    """Grouped bars: one group per label, one bar per named series (None: no bar).
    ``data-points`` counts the bars drawn; with none the chart says ``empty_note``."""
    drawn = sum(1 for values in series.values() for value in values if value is not None)
    if not labels or not drawn:
        return _empty(testid, title, width=width, height=height, note=empty_note)
    values_seen = [value for values in series.values() for value in values if value is not None]
    y_top = _nice_max(max(max(values_seen), 0.0))
    left, right = _MARGIN_LEFT, width - _MARGIN_RIGHT
    top, bottom = _MARGIN_TOP, height - _MARGIN_BOTTOM
    group_width = (right - left) / len(labels)
    bar_width = group_width * 0.8 / max(len(series), 1)
    parts = [_axes(width=width, height=height, y_top=y_top, x_label=x_label, y_label=y_label)]
    for group, label in enumerate(labels):
        center = left + group_width * (group + 0.5)
        fits = max(int(group_width / 6.2), 4)  # characters of 11 px text under one group
        short = label if len(label) <= fits else label[: fits - 1] + "…"
        parts.append(
            f'<text class="tick" x="{center:.1f}" y="{bottom + 16}" text-anchor="middle">'
            f"<title>{escape(label)}</title>{escape(short)}</text>"
        )
        for index, (name, values) in enumerate(series.items()):
            value = values[group] if group < len(values) else None
            if value is None:
                continue
            bar_height = (bottom - top) * max(value, 0.0) / y_top
            x = center - group_width * 0.4 + bar_width * index
            parts.append(
                f'<rect class="bar" x="{x:.1f}" y="{bottom - bar_height:.1f}" '
                f'width="{max(bar_width - 2, 1):.1f}" height="{bar_height:.1f}" '
                f'fill="{PALETTE[index % len(PALETTE)]}"><title>{escape(label)} '
                f"{escape(name)}: {escape(str(value_format(value)))}</title></rect>"
            )
    return _frame(
        testid,
        title,
        drawn,
        "".join(parts),
        width=width,
        height=height,
        legend=_legend(series),
        largest=max(values_seen),
    )


# ── the page ──────────────────────────────────────────────────────────────────────────────
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


def stat(label: str, value: str, *, testid: str) -> str:
    return (
        f'<div class="stat" data-testid="{escape(testid)}" data-value="{escape(value)}">'
        f"<b>{escape(value)}</b>"
        f"<span>{escape(label)}</span></div>"
    )


def section(title: str, *content: str, note: str = "") -> str:
    explanation = f'<p class="note">{escape(note)}</p>' if note else ""
    return f"<section><h2>{escape(title)}</h2>{explanation}{''.join(content)}</section>"


_CSS = """
*{box-sizing:border-box}
body{margin:0;padding:16px 24px;font:14px/1.4 system-ui,-apple-system,"Segoe UI",sans-serif;
  color:#0f172a;background:#f8fafc}
header{display:flex;align-items:baseline;gap:16px;flex-wrap:wrap}
h1{font-size:20px;margin:0 0 4px}h2{font-size:16px;margin:0 0 6px}
header span{color:#475569}
section{background:#fff;border:1px solid #e2e8f0;border-radius:8px;padding:10px 14px;
  margin:10px 0}
.row{display:flex;flex-wrap:wrap;gap:12px;align-items:flex-start}
.grow{flex:1 1 420px;min-width:0}
.note{color:#475569;margin:0 0 8px;font-size:12px}
.chart{margin:0}
svg text{font:11px system-ui,sans-serif;fill:#334155}
svg .title{font-size:13px;font-weight:600;fill:#0f172a}
svg .axis-label{font-size:11px;fill:#475569}
svg .empty{font-size:13px;fill:#94a3b8}
svg .axis{stroke:#64748b}svg .grid{stroke:#e2e8f0}svg .line{stroke-width:2}
.legend{font-size:12px;color:#334155;margin:2px 0 0 58px}
.legend span{margin-right:14px}
.legend i{display:inline-block;width:10px;height:10px;border-radius:2px;margin-right:4px}
table{border-collapse:collapse;width:100%;font-size:12px;margin-bottom:8px}
th,td{text-align:left;padding:4px 8px;border-bottom:1px solid #e2e8f0;vertical-align:top}
th{background:#f1f5f9}td.empty{color:#94a3b8;text-align:center}
.stats{display:flex;gap:10px;flex-wrap:wrap;margin-bottom:8px}
.stat{border:1px solid #e2e8f0;border-radius:6px;padding:6px 10px;min-width:110px}
.stat b{display:block;font-size:18px}.stat span{color:#475569;font-size:12px}
"""


def page(*, title: str, subtitle: str, sections: Sequence[str]) -> str:
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta name="referrer" content="no-referrer">'
        f"<title>{escape(title)}</title><style>{_CSS}</style></head><body>"
        f"<header><h1>{escape(title)}</h1><span>{escape(subtitle)}</span></header>"
        f"{''.join(sections)}</body></html>"
    )


def clock(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S") if moment else "—"
