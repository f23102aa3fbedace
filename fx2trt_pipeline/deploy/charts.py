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
from html import escape
from collections.abc import Sequence

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

    Bars are capped at ``cap_db`` (an exact layer has infinite SQNR); the value is printed at the bar's end.
    """
    label_w, row_h, top = 210, 20, 26
    plot_w = width - label_w - 70
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


def histogram(
    counts: Sequence[int],
    bin_width: float,
    threshold: float,
    amax: float,
    title: str = "",
    width: int = 500,
    height: int = 190,
) -> str:
    """Histogram of |x| (``counts[k]`` values in ``[k*w, (k+1)*w)``), log count axis, threshold marked.

    The region above ``threshold`` (values that saturate to +-127) is shaded, and the share of values
    clipped is printed.

    Example:
        >>> "clip" in histogram([5, 3, 1, 0, 1], 0.5, 1.6, 2.3)
        True
    """
    left, right, top, bottom = 38, 18, 22, 30
    pw, ph = width - left - right, height - top - bottom
    x_max = max(amax, threshold, bin_width) * 1.04
    total = sum(counts) or 1
    peak = math.log10(max(max(counts, default=1), 1) + 1)
    out = [
        _svg_open(width, height, title, fit=True),
        f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="#f8f9fa"/>',
    ]
    tx = left + pw * min(threshold / x_max, 1.0)
    out.append(f'<rect x="{tx:.1f}" y="{top}" width="{left + pw - tx:.1f}" height="{ph}" fill="#ffe3e3"/>')
    for k, c in enumerate(counts):
        if c <= 0:
            continue
        x0, x1 = left + pw * k * bin_width / x_max, left + pw * (k + 1) * bin_width / x_max
        h = ph * math.log10(c + 1) / peak
        out.append(
            f'<rect x="{x0:.2f}" y="{top + ph - h:.2f}" width="{max(x1 - x0, 0.8):.2f}" height="{h:.2f}" '
            f'fill="#4c6ef5"/>'
        )
    clipped = sum(c for k, c in enumerate(counts) if k * bin_width >= threshold) / total
    ax = left + pw * amax / x_max
    out.append(
        f'<line x1="{ax:.1f}" y1="{top}" x2="{ax:.1f}" y2="{top + ph}" stroke="#868e96" '
        f'stroke-dasharray="2,2"><title>max |x| = {amax:.4g}</title></line>'
    )
    out.append(
        f'<line x1="{tx:.1f}" y1="{top - 4}" x2="{tx:.1f}" y2="{top + ph}" stroke="#e03131" stroke-width="2">'
        f"<title>clipping threshold (amax) = {threshold:.4g}</title></line>"
    )
    anchor = "end" if tx > left + pw * 0.6 else "start"
    dx = -4 if anchor == "end" else 4
    out.append(
        f'<text x="{tx + dx:.1f}" y="{top + 11}" text-anchor="{anchor}" fill="#c92a2a" font-weight="bold">'
        f"clip {threshold:.3g} ({100 * clipped:.3g}% above)</text>"
    )
    for frac, anchor in ((0.0, "start"), (0.5, "middle"), (1.0, "end")):
        x = left + pw * frac
        out.append(
            f'<text x="{x:.1f}" y="{top + ph + 13}" text-anchor="{anchor}" fill="#868e96">'
            f"{x_max * frac:.3g}</text>"
        )
    out.append(
        f'<text x="{left + pw / 2:.1f}" y="{height - 3}" text-anchor="middle" fill="#495057">|x|</text>'
        f'<text x="10" y="{top + ph / 2:.1f}" transform="rotate(-90 10 {top + ph / 2:.1f})" '
        f'text-anchor="middle" fill="#495057">count (log)</text>'
        f'<text x="{left}" y="14" fill="#212529" font-weight="bold">{escape(title)}</text></svg>'
    )
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


def display_bins(
    counts: Sequence[int], bin_width: float, upto: float, target: int = 96
) -> tuple[list[int], float]:
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


__all__ = ["display_bins", "histogram", "optional_float", "sqnr_bars", "sqnr_color", "step_bars"]
