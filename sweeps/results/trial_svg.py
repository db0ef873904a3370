"""A trial's learning rate, training loss and validation curves (`charts.trial_panels`) as one
SVG image.

Written by hand rather than with matplotlib: every finished trial gets one, and matplotlib
spends ~0.1 s of a worker's time per figure (a quarter of a demo trial's training), this
about a millisecond. Four panels, "nice" ticks, polylines; nothing else.
"""

from __future__ import annotations

import math
from html import escape

from sweeps.results.charts import Chart, trial_panels
from sweeps.results.curves import Curves

WIDTH, HEIGHT = 720, 448
TOP = 40  # room for the title
CELL_W, CELL_H = WIDTH / 2, (HEIGHT - TOP) / 2
LEFT, RIGHT, ABOVE, BELOW = 56, 14, 22, 34  # margins of a plot inside its cell
COLOUR = "#1f77b4"
FONT = 'font-family="DejaVu Sans, Arial, sans-serif"'


def trial_svg(curves: Curves, title: str) -> str:
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" {FONT} font-size="10">',
        f'<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>',
        *_title(title),
    ]
    for i, chart in enumerate(trial_panels(curves)):
        parts += _panel((i % 2) * CELL_W, TOP + (i // 2) * CELL_H, chart)
    parts.append("</svg>")
    return "\n".join(parts)


def _title(title: str) -> list[str]:
    lines, line = [], ""
    for word in title.split():  # wrap at ~110 characters
        if line and len(line) + len(word) > 110:
            lines.append(line)
            line = ""
        line = f"{line} {word}".strip()
    lines.append(line)
    return [
        f'<text x="{WIDTH / 2}" y="{14 + 13 * i}" text-anchor="middle" font-size="11">'
        f"{escape(text)}</text>"
        for i, text in enumerate(lines[:2])
    ]


def _panel(x0: float, y0: float, chart: Chart) -> list[str]:
    left, top = x0 + LEFT, y0 + ABOVE
    width, height = CELL_W - LEFT - RIGHT, CELL_H - ABOVE - BELOW
    out = [
        f'<text x="{left + width / 2}" y="{top - 7}" text-anchor="middle" font-size="11">'
        f"{escape(chart.title)}</text>",
        f'<text x="{left + width / 2}" y="{top + height + 28}" text-anchor="middle">'
        f"{escape(chart.x_label)}</text>",
        f'<rect x="{left}" y="{top}" width="{width}" height="{height}" fill="none" '
        'stroke="#444" stroke-width="0.8"/>',
    ]
    if not chart.series:
        return [
            *out,
            f'<text x="{left + width / 2}" y="{top + height / 2}" '
            'text-anchor="middle" fill="#888">not recorded</text>',
        ]
    (line,) = chart.series
    xs, ys = [float(x) for x in line.x], [float(y) for y in line.y]
    x_ticks, y_ticks = ticks(min(xs), max(xs)), ticks(min(ys), max(ys))
    x_lo, x_hi = min(x_ticks[0], min(xs)), max(x_ticks[-1], max(xs))
    y_lo, y_hi = min(y_ticks[0], min(ys)), max(y_ticks[-1], max(ys))

    def px(x: float) -> float:
        return left + (x - x_lo) / (x_hi - x_lo) * width

    def py(y: float) -> float:
        return top + height - (y - y_lo) / (y_hi - y_lo) * height

    for t in x_ticks:
        out.append(
            f'<line x1="{px(t):.1f}" y1="{top}" x2="{px(t):.1f}" y2="{top + height}" '
            'stroke="#ddd" stroke-width="0.6"/>'
        )
        out.append(
            f'<text x="{px(t):.1f}" y="{top + height + 13}" text-anchor="middle">'
            f"{_label(t)}</text>"
        )
    for t in y_ticks:
        out.append(
            f'<line x1="{left}" y1="{py(t):.1f}" x2="{left + width}" y2="{py(t):.1f}" '
            'stroke="#ddd" stroke-width="0.6"/>'
        )
        out.append(
            f'<text x="{left - 5}" y="{py(t) + 3.5:.1f}" text-anchor="end">{_label(t)}</text>'
        )
    points = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in zip(xs, ys, strict=True))
    out.append(f'<polyline points="{points}" fill="none" stroke="{COLOUR}" stroke-width="1.4"/>')
    if "markers" in line.style:
        out += [
            f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="2.2" fill="{COLOUR}"/>'
            for x, y in zip(xs, ys, strict=True)
        ]
    return out


def ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """About ``count`` round values (1, 2 or 5 times a power of ten apart) covering [lo, hi]."""
    if hi - lo <= abs(hi) * 1e-9:  # a flat curve: a band around it
        pad = abs(hi) * 0.1 or 1.0
        lo, hi = lo - pad, hi + pad
    raw = (hi - lo) / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    first = math.floor(lo / step) * step
    return [first + i * step for i in range(math.ceil((hi - first) / step - 1e-9) + 1)]


def _label(value: float) -> str:
    return f"{value:.3g}" if value else "0"
