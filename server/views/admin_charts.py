"""Server-rendered SVG charts for the admin pages (no JavaScript, no external assets).

Made to survive printing in black and white: every domain line has its own dash pattern and
marker shape as well as its colour, each point carries its value as text, and the legend repeats
the pattern. All text is escaped: domain names and labels come from data.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from html import escape
from typing import Any

from markupsafe import Markup

PALETTE = ["#1b4f72", "#b03a2e", "#1e8449", "#7d3c98", "#b9770e", "#2e4053", "#117a65"]
DASHES = ["", "6 3", "2 3", "8 3 2 3", "10 4", "1 2", "4 4 1 4"]
SCALE_MIN, SCALE_MAX = 1.0, 4.0
SLANT_DEGREES = 40
_MIN_SLANTED_STEP = 24  # px between slanted dates: their lines of text stay ~15 px apart


@dataclasses.dataclass(slots=True)
class Point:
    """One value of a series at an x label (None: not rated)."""

    label: str
    value: float | None


def _num(v: Any) -> float | None:
    try:
        return None if v is None else float(v)
    except (TypeError, ValueError):
        return None


def _label(v: Any) -> str:
    if hasattr(v, "isoformat"):
        return v.isoformat()[:10]
    return str(v)


def _point(raw: Any) -> Point:
    """A point from a ``(date, value)`` pair, a dict or an object with date/value attributes."""
    if isinstance(raw, Point):
        return raw
    if isinstance(raw, list | tuple) and len(raw) >= 2:
        return Point(_label(raw[0]), _num(raw[1]))
    get = raw.get if isinstance(raw, Mapping) else lambda k, d=None: getattr(raw, k, d)
    label = next(
        (get(k) for k in ("date", "assessed_on", "label", "when", "x") if get(k) is not None), ""
    )
    value = next((get(k) for k in ("score", "value", "mean", "y") if get(k) is not None), None)
    return Point(_label(label), _num(value))


def normalise_series(series: Any) -> dict[str, list[Point]]:
    """``{domain: [Point...]}`` from a mapping or a list of objects with name + points."""
    out: dict[str, list[Point]] = {}
    if isinstance(series, Mapping):
        items: Iterable[tuple[Any, Any]] = series.items()
    else:
        items = (
            (
                getattr(s, "domain", None) or getattr(s, "name", None) or str(i),
                getattr(s, "points", None) or getattr(s, "values", None) or [],
            )
            for i, s in enumerate(series or [])
        )
    for name, points in items:
        if isinstance(points, Mapping):  # {date: value}
            points = list(points.items())
        out[str(name)] = [_point(p) for p in points]
    return out


def trend_chart(series: Any, *, title: str = "Domain scores over time") -> Markup:
    """A line chart: x = assessments (by date), y = score 1-4, one line per domain."""
    data = normalise_series(series)
    labels: list[str] = []
    for points in data.values():
        for p in points:
            if p.label not in labels:
                labels.append(p.label)
    labels.sort()
    n = max(len(labels), 1)
    # the legend on the right is as wide as the longest domain name
    left, top, plot_w, plot_h = 48, 36, 512, 240
    # a survivor seen for years has many assessments: the plot widens so that the dates keep
    # apart, and they slant once side by side they would run into each other
    plot_w = max(plot_w, (n - 1) * _MIN_SLANTED_STEP)
    right = max(360, round(max((text_width(name) for name in data), default=0) + 96))
    step = plot_w / max(n - 1, 1)
    slant = n > 1 and step < max(text_width(lab) for lab in labels) + 8
    width = left + plot_w + right
    height = top + plot_h + (96 if slant else 56)

    def x(i: int) -> float:
        return left + (i * step if n > 1 else plot_w / 2)

    def y(v: float) -> float:
        v = min(max(v, SCALE_MIN), SCALE_MAX)
        return top + plot_h - (v - SCALE_MIN) / (SCALE_MAX - SCALE_MIN) * plot_h

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart trend" role="img" '
        f'viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        f'aria-labelledby="trend-title">',
        f'<title id="trend-title">{escape(title)}</title>',
        f'<text x="{left}" y="20" class="chart-title">{escape(title)}</text>',
    ]
    for tick in (1, 2, 3, 4):
        ty = y(tick)
        parts.append(
            f'<line class="grid" x1="{left}" x2="{left + plot_w}" y1="{ty:.1f}" y2="{ty:.1f}" '
            f'stroke="#bbb" stroke-width="0.5"/>'
            f'<text class="axis-label" x="{left - 8}" y="{ty + 4:.1f}" text-anchor="end">'
            f"{tick}</text>"
        )
    parts.append(
        f'<line class="axis" x1="{left}" x2="{left}" y1="{top}" y2="{top + plot_h}" '
        f'stroke="#000"/><line class="axis" x1="{left}" x2="{left + plot_w}" '
        f'y1="{top + plot_h}" y2="{top + plot_h}" stroke="#000"/>'
        f'<text class="axis-name" x="12" y="{top + plot_h / 2:.0f}" '
        f'transform="rotate(-90 12 {top + plot_h / 2:.0f})" text-anchor="middle">'
        f"score (1 = most vulnerable, 4 = least)</text>"
    )
    for i, lab in enumerate(labels):
        ly = top + plot_h + 18
        turn = (
            f' text-anchor="end" transform="rotate(-{SLANT_DEGREES} {x(i):.1f} {ly})"'
            if slant
            else ' text-anchor="middle"'
        )
        parts.append(
            f'<text class="axis-label x-label" x="{x(i):.1f}" y="{ly}"{turn}>{escape(lab)}</text>'
        )
    for k, (name, points) in enumerate(data.items()):
        color, dash = PALETTE[k % len(PALETTE)], DASHES[k % len(DASHES)]
        coords = [
            (x(labels.index(p.label)), y(p.value), p.value) for p in points if p.value is not None
        ]
        coords.sort()
        dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
        parts.append(f'<g class="series" data-domain="{escape(name)}">')
        # one line per run of scored assessments: where this domain was not scored (every
        # rating excluded) the line breaks, rather than drawing a score nobody gave
        values = {p.label: p.value for p in points}
        runs: list[list[tuple[float, float]]] = [[]]
        for i, lab in enumerate(labels):
            if values.get(lab) is None:
                runs.append([])
            else:
                runs[-1].append((x(i), y(values[lab])))
        for run in runs:
            if len(run) >= 2:
                pts = " ".join(f"{cx:.1f},{cy:.1f}" for cx, cy in run)
                parts.append(
                    f'<polyline class="series-line" data-domain="{escape(name)}" '
                    f'points="{pts}" fill="none" stroke="{color}" stroke-width="2"{dash_attr}/>'
                )
        for cx, cy, v in coords:
            parts.append(_marker(k, cx, cy, color))
            parts.append(
                f'<text class="point-label" x="{cx + 5:.1f}" y="{cy - 6:.1f}" fill="{color}">'
                f"{v:.2f}</text>"
            )
        parts.append("</g>")
        ly = top + 8 + k * 22
        lx = left + plot_w + 44
        parts.append(
            f'<g class="legend-item"><line x1="{lx}" x2="{lx + 30}" y1="{ly}" y2="{ly}" '
            f'stroke="{color}" stroke-width="2"{dash_attr}/>{_marker(k, lx + 15, ly, color)}'
            f'<text x="{lx + 36}" y="{ly + 4}">{escape(name)}</text></g>'
        )
    if not data:
        parts.append(
            f'<text x="{left + plot_w / 2:.0f}" y="{top + plot_h / 2:.0f}" '
            f'text-anchor="middle">No scored assessments yet</text>'
        )
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 (every data value above is escaped)


def text_width(text: str, size: float = 12) -> float:
    """A generous estimate of ``text``'s drawn width in px at font ``size``: the chart sizes its
    margins by it, so that no group or domain name is cut off (measured in Chromium, Latin text
    at 12px takes 6.3-6.6px a character; wide East Asian characters take a full em)."""
    import unicodedata

    return sum(size if unicodedata.east_asian_width(ch) in "WF" else 0.6 * size for ch in text)


def fit_text(text: str, room: float, size: float = 12) -> str:
    """``text``, shortened with an ellipsis when it would not fit in ``room`` px."""
    if text_width(text, size) <= room:
        return text
    while text and text_width(text + "…", size) > room:
        text = text[:-1]
    return text + "…"


def _marker(k: int, cx: float, cy: float, color: str) -> str:
    """A different marker shape per series (circle, square, triangle, diamond...)."""
    shape = k % 4
    if shape == 0:
        return f'<circle class="point" cx="{cx:.1f}" cy="{cy:.1f}" r="4" fill="{color}"/>'
    if shape == 1:
        return (
            f'<rect class="point" x="{cx - 4:.1f}" y="{cy - 4:.1f}" width="8" height="8" '
            f'fill="{color}"/>'
        )
    if shape == 2:
        return (
            f'<polygon class="point" points="{cx:.1f},{cy - 5:.1f} {cx + 5:.1f},{cy + 4:.1f} '
            f'{cx - 5:.1f},{cy + 4:.1f}" fill="{color}"/>'
        )
    return (
        f'<polygon class="point" points="{cx:.1f},{cy - 5:.1f} {cx + 5:.1f},{cy:.1f} '
        f'{cx:.1f},{cy + 5:.1f} {cx - 5:.1f},{cy:.1f}" fill="#fff" stroke="{color}" '
        f'stroke-width="2"/>'
    )


@dataclasses.dataclass(slots=True)
class Bar:
    """One bar: a label, its value (None when suppressed) and n."""

    label: str
    value: float | None
    n: int | None = None
    suppressed: bool = False


def bar_chart(
    title: str,
    bars: Sequence[Bar],
    *,
    vmin: float | None = None,
    vmax: float | None = None,
    fmt: str = "{:.2f}",
) -> Markup:
    """A horizontal bar chart from a zero line (negative values go left: change since intake
    can be a decline); suppressed cells are drawn as a dashed outline with words, no value and
    no n (a cell is suppressed below 5 survivors, or to keep such a cell from being worked out
    from the others, so the words say neither)."""
    values = [b.value for b in bars if b.value is not None and not b.suppressed]
    lo = min([0.0, *values]) if vmin is None else vmin
    hi = max([0.0, *values]) if vmax is None else vmax
    if hi == lo:
        hi = lo + 1.0
    # the labels' column is as wide as the longest label (within reason: a longer one is
    # shortened, whole in the figures' table and in its tooltip)
    row_h, plot_w = 26, 330
    left = min(max(120.0, max((text_width(b.label) for b in bars), default=0) + 16), 560)
    width = round(left + plot_w + 110)
    height = 40 + row_h * max(len(bars), 1)

    def x(v: float) -> float:
        return left + (min(max(v, lo), hi) - lo) / (hi - lo) * plot_w

    zero = x(0.0)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart bars" role="img" '
        f'viewBox="0 0 {width} {height}" width="{width}" height="{height}">',
        f"<title>{escape(title)}</title>",
        f'<text x="4" y="18" class="chart-title">{escape(title)}</text>',
    ]
    for i, b in enumerate(bars):
        yy = 30 + i * row_h
        shown = fit_text(b.label, left - 12)
        tip = f"<title>{escape(b.label)}</title>" if shown != b.label else ""
        parts.append(
            f'<text x="{left - 8:.0f}" y="{yy + 15}" text-anchor="end">{tip}{escape(shown)}</text>'
        )
        if b.suppressed or b.value is None:
            parts.append(
                f'<rect class="bar suppressed" x="{left:.0f}" y="{yy + 2}" width="{plot_w}" '
                f'height="{row_h - 8}" fill="none" stroke="#999" stroke-dasharray="3 3"/>'
                f'<text class="suppressed-label" x="{left + 8:.0f}" y="{yy + 15}">'
                f"suppressed to protect small groups</text>"
            )
            continue
        end = x(b.value)
        x0, w = min(zero, end), abs(end - zero)
        n_text = f" (n={b.n})" if b.n is not None else ""
        parts.append(
            f'<rect class="bar" x="{x0:.1f}" y="{yy + 2}" width="{w:.1f}" height="{row_h - 8}" '
            f'fill="#1b4f72"/><text class="bar-value" x="{max(zero, end) + 6:.1f}" '
            f'y="{yy + 15}">{escape(fmt.format(b.value))}{escape(n_text)}</text>'
        )
    parts.append(
        f'<line class="zero" x1="{zero:.1f}" x2="{zero:.1f}" y1="26" y2="{height - 6}" '
        f'stroke="#000" stroke-width="1"/>'
    )
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 (every data value above is escaped)
