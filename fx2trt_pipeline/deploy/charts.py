"""Small inline-SVG charts for the HTML report: no plotting library, no scripts, crisp at any zoom.

* :func:`sqnr_bars` -- horizontal bars of per-layer SQNR (worst first), coloured by severity.
* :func:`histogram` -- a |x| histogram on a log count axis with the chosen clipping threshold drawn.
* :func:`step_bars` -- the time each pipeline step took, as one stacked bar.

Example:
    >>> svg = sqnr_bars([("conv1", 12.5, "conv2d"), ("fc", 35.0, "linear")])
    >>> svg.startswith("<svg") and "conv1" in svg
    True
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

FONT = 'font-family="Helvetica, Arial, sans-serif" font-size="11"'


def _svg_open(width: float, height: float, title: str, fit: bool = False) -> str:
    # fit=True: scale to the container's width (height follows the aspect ratio), else never wider than it.
    style = "width:100%;height:auto" if fit else "max-width:100%;height:auto"
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" '
        f'viewBox="0 0 {width:.0f} {height:.0f}" style="{style}" {FONT} role="img" '
        f'aria-label="{escape(title)}"><title>{escape(title)}</title>'
    )


#: SQNR bands (dB): below the first is bad, above the last is excellent.
SQNR_BANDS = ((10.0, "#e03131"), (20.0, "#f08c00"), (30.0, "#fab005"), (math.inf, "#2f9e44"))
STEP_COLORS = ("#4263eb", "#1098ad", "#37b24d", "#f59f00", "#f76707", "#ae3ec9", "#d6336c", "#495057")


def sqnr_color(db: float) -> str:
    """Severity colour of an SQNR value (red < 10 dB < orange < 20 dB < yellow < 30 dB < green).

    Example:
        >>> sqnr_color(5.0), sqnr_color(40.0)
        ('#e03131', '#2f9e44')
    """
    if math.isnan(db):
        return "#adb5bd"
    return next((color for limit, color in SQNR_BANDS if db < limit), SQNR_BANDS[-1][1])


def _fmt_db(db: float) -> str:
    if math.isinf(db):
        return "\u221e dB"
    return "n/a" if math.isnan(db) else f"{db:.1f} dB"


def sqnr_bars(
    rows: Sequence[tuple[str, float, str]],
    width: int = 760,
    cap_db: float = 60.0,
    title: str = "Per-layer SQNR",
) -> str:
    """Horizontal bar chart of ``(layer, SQNR dB, op)`` rows, in the order given.

    The axis runs from 0 to the largest finite value rounded up to 10 dB, at most ``cap_db`` (an exact layer
    has infinite SQNR and fills the axis); the value is printed at the bar's end.
    """
    label_w, row_h, top = 210, 20, 26
    plot_w = width - label_w - 70
    finite = [db for _, db, _ in rows if math.isfinite(db)]
    # the axis ends at the largest finite value, rounded up to 10 dB (at most cap_db); exact layers fill it
    cap_db = min(cap_db, max(10.0, 10.0 * math.ceil(max(finite, default=cap_db) / 10.0)))
    height = top + row_h * len(rows) + 22
    out = [_svg_open(width, height, title)]
    for tick in range(0, int(cap_db) + 1, 10):
        x = label_w + plot_w * tick / cap_db
        out.append(
            f'<line x1="{x:.1f}" y1="{top - 6}" x2="{x:.1f}" y2="{height - 20}" stroke="#e9ecef"/>'
            f'<text x="{x:.1f}" y="{top - 10}" text-anchor="middle" fill="#868e96">{tick}</text>'
        )
    out.append(
        f'<text x="{label_w + plot_w:.0f}" y="{height - 6}" text-anchor="end" fill="#868e96">'
        f"SQNR (dB), higher is better</text>"
    )
    for i, (layer, db, op) in enumerate(rows):
        y = top + i * row_h
        value = 0.0 if math.isnan(db) else min(max(db, 0.0), cap_db)
        w = plot_w * value / cap_db
        name = layer if len(layer) <= 30 else layer[:29] + "\u2026"
        out.append(
            f"<g><title>{escape(layer)} ({escape(op)}): {_fmt_db(db)}</title>"
            f'<text x="{label_w - 8}" y="{y + 14}" text-anchor="end" fill="#212529">{escape(name)}</text>'
            f'<rect x="{label_w}" y="{y + 3}" width="{max(w, 1.5):.1f}" height="{row_h - 6}" rx="2" '
            f'fill="{sqnr_color(db)}"/>'
            f'<text x="{label_w + max(w, 1.5) + 5:.1f}" y="{y + 14}" fill="#495057">{_fmt_db(db)}</text></g>'
        )
    out.append("</svg>")
    return "".join(out)


@dataclass(frozen=True)
class Histogram:
    """|x| counts (``counts[k]`` values in ``[k*bin_width, (k+1)*bin_width)``), the calibrated threshold and
    the largest |x| seen."""

    counts: Sequence[int]
    bin_width: float
    threshold: float
    amax: float

    @property
    def x_max(self) -> float:
        """Right end of the x axis: the last non-empty bin, the threshold or the largest |x|, whichever is last."""
        last = max((k + 1 for k, c in enumerate(self.counts) if c > 0), default=1)
        return max(self.amax, self.threshold, last * self.bin_width) * 1.04

    @property
    def clipped(self) -> float:
        """Share of the values at or above the threshold."""
        total = sum(self.counts) or 1
        return sum(c for k, c in enumerate(self.counts) if k * self.bin_width >= self.threshold) / total


def _histogram_bars(h: Histogram, box: tuple[float, float, float, float]) -> list[str]:
    left, top, pw, ph = box
    peak = math.log10(max(max(h.counts, default=1), 1) + 1)
    out = []
    for k, c in enumerate(h.counts):
        if c <= 0:
            continue
        x0, x1 = left + pw * k * h.bin_width / h.x_max, left + pw * (k + 1) * h.bin_width / h.x_max
        bar = ph * math.log10(c + 1) / peak
        out.append(
            f'<rect x="{x0:.2f}" y="{top + ph - bar:.2f}" width="{max(x1 - x0, 0.8):.2f}" '
            f'height="{bar:.2f}" fill="#4c6ef5"><title>{c} values in [{k * h.bin_width:.3g}, '
            f"{(k + 1) * h.bin_width:.3g})</title></rect>"
        )
    return out


def _histogram_marks(h: Histogram, box: tuple[float, float, float, float]) -> list[str]:
    left, top, pw, ph = box
    tx, ax = left + pw * min(h.threshold / h.x_max, 1.0), left + pw * min(h.amax / h.x_max, 1.0)
    anchor = "end" if tx > left + pw * 0.6 else "start"
    return [
        f'<line x1="{ax:.1f}" y1="{top}" x2="{ax:.1f}" y2="{top + ph}" stroke="#868e96" '
        f'stroke-dasharray="2,2"><title>max |x| = {h.amax:.4g}</title></line>',
        f'<line x1="{tx:.1f}" y1="{top - 4}" x2="{tx:.1f}" y2="{top + ph}" stroke="#e03131" stroke-width="2">'
        f"<title>clipping threshold (amax) = {h.threshold:.4g}</title></line>",
        f'<text x="{tx + (-4 if anchor == "end" else 4):.1f}" y="{top + 11}" text-anchor="{anchor}" '
        f'fill="#c92a2a" font-weight="bold">clip {h.threshold:.3g} ({100 * h.clipped:.3g}% above)</text>',
    ]


def _histogram_axes(h: Histogram, box: tuple[float, float, float, float], title: str, height: int) -> list[str]:
    left, top, pw, ph = box
    peak = max(h.counts, default=0)
    out = [
        f'<text x="{left + pw * frac:.1f}" y="{top + ph + 13}" text-anchor="{anchor}" fill="#868e96">'
        f"{h.x_max * frac:.3g}</text>"
        for frac, anchor in ((0.0, "start"), (0.5, "middle"), (1.0, "end"))
    ]
    out.append(
        f'<text x="{left - 3}" y="{top + 8}" text-anchor="end" fill="#868e96">{peak}</text>'
        f'<text x="{left - 3}" y="{top + ph}" text-anchor="end" fill="#868e96">0</text>'
    )
    out.append(
        f'<text x="{left + pw / 2:.1f}" y="{height - 3}" text-anchor="middle" fill="#495057">|x|</text>'
        f'<text x="10" y="{top + ph / 2:.1f}" transform="rotate(-90 10 {top + ph / 2:.1f})" '
        f'text-anchor="middle" fill="#495057">count (log)</text>'
        f'<text x="{left}" y="14" fill="#212529" font-weight="bold">{escape(title)}</text>'
    )
    return out


def histogram(hist: Histogram, title: str = "", size: tuple[int, int] = (500, 190)) -> str:
    """Histogram of |x| on a log count axis (labelled 0 .. the largest count), threshold marked.

    The x axis ends just after the last non-empty bin, the threshold or the largest |x| (whichever is
    last), so every bar and mark is inside it. The region above the threshold (values that saturate to
    +-127) is shaded and the share of values clipped is printed.

    Example:
        >>> "clip" in histogram(Histogram([5, 3, 1, 0, 1], 0.5, 1.6, 2.3))
        True
    """
    width, height = size
    left, right, top, bottom = 38, 18, 22, 30
    box = (left, top, width - left - right, height - top - bottom)
    tx = left + box[2] * min(hist.threshold / hist.x_max, 1.0)
    out = [
        _svg_open(width, height, title, fit=True),
        f'<rect x="{left}" y="{top}" width="{box[2]}" height="{box[3]}" fill="#f8f9fa"/>',
        f'<rect x="{tx:.1f}" y="{top}" width="{left + box[2] - tx:.1f}" height="{box[3]}" fill="#ffe3e3"/>',
        *_histogram_bars(hist, box),
        *_histogram_marks(hist, box),
        *_histogram_axes(hist, box, title, height),
        "</svg>",
    ]
    return "".join(out)


def step_bars(steps: Sequence[tuple[str, float]], width: int = 1040) -> str:
    """One stacked bar of step durations with a legend (seconds) that wraps onto more lines."""
    total = sum(max(s, 0.0) for _, s in steps) or 1.0
    x, legend_x, legend_y, items = 0.0, 0.0, 44.0, []
    for i, (name, seconds) in enumerate(steps):
        w = (width - 2) * max(seconds, 0.0) / total
        color = STEP_COLORS[i % len(STEP_COLORS)]
        items.append(
            f'<rect x="{x + 1:.1f}" y="4" width="{max(w, 1):.1f}" height="22" fill="{color}">'
            f"<title>{escape(name)}: {seconds:.2f} s</title></rect>"
        )
        x += w
        label = f"{name} {seconds:.1f} s"
        advance = 24 + 6.6 * len(label)
        if legend_x + advance > width:
            legend_x, legend_y = 0.0, legend_y + 18
        items.append(
            f'<rect x="{legend_x:.0f}" y="{legend_y - 9:.0f}" width="10" height="10" fill="{color}"/>'
            f'<text x="{legend_x + 14:.0f}" y="{legend_y:.0f}" fill="#343a40">{escape(label)}</text>'
        )
        legend_x += advance
    return _svg_open(width, legend_y + 8, "step times") + "".join(items) + "</svg>"


def display_bins(counts: Sequence[int], bin_width: float, upto: float, target: int = 96) -> tuple[list[int], float]:
    """Merge adjacent histogram bins so about ``target`` bars cover ``[0, upto]``; returns (counts, width).

    Example:
        >>> display_bins([1, 1, 1, 1, 0, 0, 0, 0], 1.0, 4.0, target=2)
        ([2, 2], 2.0)
    """
    used = max(1, min(len(counts), math.ceil(upto / bin_width) if bin_width > 0 else len(counts)))
    factor = max(1, math.ceil(used / target))
    merged = [sum(counts[i : i + factor]) for i in range(0, used, factor)]
    rest = sum(counts[used:])
    if rest and merged:
        merged[-1] += rest  # values beyond the drawn range (none when upto >= amax)
    return merged, bin_width * factor


def optional_float(value: float | None) -> float:
    """``None`` as NaN (for charts fed from JSON)."""
    return math.nan if value is None else float(value)


__all__ = ["Histogram", "display_bins", "histogram", "optional_float", "sqnr_bars", "sqnr_color", "step_bars"]
