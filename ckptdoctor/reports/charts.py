"""Hand-written SVG charts for the HTML report: one row per BN layer, one or more panels side by side.

Each panel has its own horizontal scale (logarithmic for variances, ratios, shifts and
gaps; symmetric-logarithmic for means, which have either sign) and draws, per layer:
every channel's value as a thin tick (a rug: ticks falling on the same half pixel are
drawn once, so a 2048-channel layer costs at most a few hundred path segments), marks
(a median, a largest value, a before and an after) and a reference line (variance 1,
mean 0, ratio 1) or shaded threshold zones. Values beyond a panel's range are drawn at
its edge. Every row carries a ``<title>`` (a tooltip in any browser) with the layer's
full name and its numbers, and the labels are ``<text>``, so the layer names can be
searched and copied. Nothing here reads files or knows about checkpoints.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from html import escape
from typing import Protocol

import numpy as np

__all__ = ["Scale", "LogScale", "SymLogScale", "Mark", "Row", "Panel", "render_chart", "fmt"]

ROW = 18  # px per layer
PANEL = 300  # px per panel's plot area
GAP = 28  # px between panels
TOP = 44  # px above the first row: panel titles and tick labels
BOTTOM = 34  # px below the last row: tick labels and the axis caption
STATUS = 64  # px of the status column
FONT = "system-ui, -apple-system, 'Segoe UI', Roboto, 'DejaVu Sans', sans-serif"
MAX_LABEL = 44  # characters of a layer name shown (the full name is in the row's tooltip)

COLOURS = {
    "rug": "#3b6ea8",
    "mark": "#1b3a5c",
    "reference": "#555555",
    "before": "#c0392b",
    "after": "#1e8449",
    "warning": "#fdf2d0",
    "error": "#f9dcdc",
    "stripe": "#f3f5f8",
    "text": "#222222",
    "muted": "#777777",
}
STATUS_COLOURS = {
    "ok": "#1e8449",
    "stale": "#b9770e",
    "at-init": "#c0392b",
    "missing": "#c0392b",
    "partial": "#c0392b",
    "invalid": "#c0392b",
    "error": "#c0392b",
    "warning": "#b9770e",
}


def fmt(value: float | None) -> str:
    """A number for a label or tooltip: 4 significant digits."""
    if value is None:
        return "n/a"
    if not math.isfinite(value):
        return str(value)
    return f"{value:.4g}"


def _tick_label(value: float) -> str:
    if value == 0:
        return "0"
    a = abs(value)
    if 1e-3 <= a < 1e4:
        return f"{value:g}"
    return f"{'-' if value < 0 else ''}1e{int(round(math.log10(a)))}"


def _finite(values) -> np.ndarray:
    a = np.asarray(values if values is not None else (), dtype=np.float64).reshape(-1)
    return a[np.isfinite(a)]


class Scale(Protocol):
    """A horizontal scale: values to positions in [0, 1], and the ticks to label."""

    def __call__(self, value: float) -> float: ...

    def positions(self, values: np.ndarray) -> np.ndarray: ...

    def ticks(self) -> list[tuple[float, str]]: ...


class LogScale:
    """log10 from a power of ten to a power of ten, covering the values and ``include``; ``floor`` bounds it below.

    With ``zero`` and a value of 0 among ``values`` (a gap or shift of exactly nothing), the scale
    reaches one decade lower than the smallest positive value and its left edge is labelled 0:
    zeros (and values below ``floor``) are drawn there, apart from every positive value.
    """

    def __init__(self, values, include=(), floor: float = 1e-12, max_decades: int = 12, zero: bool = False):
        a = _finite(values)
        self.zero = zero and bool((a <= 0).any())
        a = a[a > 0]
        pool = np.concatenate([a, np.asarray([v for v in include if v > 0], np.float64)])
        if pool.size == 0:
            pool = np.asarray([1.0])
        hi = math.ceil(math.log10(float(pool.max())))
        lo = math.floor(math.log10(max(float(pool.min()), floor)))
        lo = max(lo, hi - max_decades)
        if lo == hi:
            lo, hi = lo - 1, hi + 1
        self.lo, self.hi = lo - self.zero, hi

    def __call__(self, value: float) -> float:
        """The position in [0, 1] (values outside, zero and negatives at the edges)."""
        if not value > 0:
            return 0.0
        return min(1.0, max(0.0, (math.log10(value) - self.lo) / (self.hi - self.lo)))

    def positions(self, values: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            p = (np.log10(np.where(values > 0, values, 10.0**self.lo)) - self.lo) / (self.hi - self.lo)
        return np.clip(p, 0.0, 1.0)

    def ticks(self) -> list[tuple[float, str]]:
        step = max(1, math.ceil((self.hi - self.lo) / 6))
        ticks = [(10.0**e, _tick_label(10.0**e)) for e in range(self.lo, self.hi + 1, step)]
        return [(ticks[0][0], "0")] + ticks[1:] if self.zero else ticks


class SymLogScale:
    """sign(v) * log10(1 + |v|/c), symmetric around 0: means of either sign and any size, 0 in the middle.

    ``c`` is a power of ten near the smallest magnitudes (their 5th percentile), so a
    mean of 1e-4 is visibly off 0 when the others are of that size too.
    """

    def __init__(self, values):
        a = np.abs(_finite(values))
        a = a[a > 0]
        if a.size == 0:
            self.c, self.top = 0.1, 1.0
        else:
            self.c = 10.0 ** math.floor(math.log10(max(float(np.percentile(a, 5)), 1e-9)))
            self.top = max(10.0 ** math.ceil(math.log10(float(a.max()))), 10 * self.c)
        self._t_top = self._t(self.top)

    def _t(self, v):
        return np.sign(v) * np.log10(1.0 + np.abs(v) / self.c)

    def __call__(self, value: float) -> float:
        return float(self.positions(np.asarray([value], np.float64))[0])

    def positions(self, values: np.ndarray) -> np.ndarray:
        return np.clip(0.5 + 0.5 * self._t(values) / self._t_top, 0.0, 1.0)

    def ticks(self) -> list[tuple[float, str]]:
        decades = int(round(math.log10(self.top / self.c)))
        step = max(1, math.ceil((decades + 1) / 3))
        out = [(0.0, "0")]
        for k in range(decades, -1, -step):
            v = self.c * 10.0**k
            out += [(v, _tick_label(v)), (-v, _tick_label(-v))]
        return sorted(out)


@dataclass(frozen=True)
class Mark:
    """One marker on a row: a value, its colour, its shape (``circle``, ``ring``, ``diamond``), a tooltip."""

    value: float
    colour: str
    shape: str = "circle"
    title: str = ""


@dataclass
class Row:
    """One layer's drawing in one panel: per-channel ticks, marks, a line between two values, or a note."""

    values: np.ndarray | None = None
    marks: list[Mark] = field(default_factory=list)
    segment: tuple[float, float] | None = None
    note: str = ""
    title: str = ""


@dataclass
class Panel:
    """A panel: its title, scale, axis caption, reference line, shaded zones, and one ``Row`` per layer."""

    title: str
    scale: Scale
    caption: str
    rows: list[Row]
    reference: float | None = None
    zones: list[tuple[float, float, str]] = field(default_factory=list)  # (from, to, colour key)


def _label(name: str) -> str:
    if len(name) <= MAX_LABEL:
        return name
    half = (MAX_LABEL - 1) // 2
    return name[:half] + "…" + name[-half:]


def _rug(row: Row, scale: Scale, x0: float, y: float) -> str:
    a = _finite(row.values)
    if a.size == 0:
        return ""
    xs = np.unique(np.round((x0 + scale.positions(a) * PANEL) * 2) / 2)
    d = "".join(f"M{x:g} {y + 3:g}v{ROW - 6}" for x in xs)
    return f'<path d="{d}" stroke="{COLOURS["rug"]}" stroke-width="1" stroke-opacity="0.55" fill="none"/>'


def _mark(mark: Mark, scale: Scale, x0: float, y: float) -> str:
    x, cy = x0 + scale(mark.value) * PANEL, y + ROW / 2
    title = f"<title>{escape(mark.title)}</title>" if mark.title else ""
    if mark.shape == "diamond":
        pts = f"{x:.1f},{cy - 5:.1f} {x + 4:.1f},{cy:.1f} {x:.1f},{cy + 5:.1f} {x - 4:.1f},{cy:.1f}"
        return f'<polygon points="{pts}" fill="{mark.colour}">{title}</polygon>'
    fill = "white" if mark.shape == "ring" else mark.colour
    return (
        f'<circle cx="{x:.1f}" cy="{cy:.1f}" r="3.6" fill="{fill}" stroke="{mark.colour}" '
        f'stroke-width="1.6">{title}</circle>'
    )


def _panel(panel: Panel, x0: float, height: int) -> list[str]:
    """The panel's frame, zones, ticks, reference line and rows."""
    out = [
        f'<text x="{x0:g}" y="14" font-weight="600" font-size="12" fill="{COLOURS["text"]}">'
        f"{escape(panel.title)}</text>"
    ]
    bottom = TOP + height
    for lo, hi, colour in panel.zones:
        a, b = sorted((panel.scale(lo), panel.scale(hi)))
        out.append(
            f'<rect x="{x0 + a * PANEL:.1f}" y="{TOP}" width="{(b - a) * PANEL:.1f}" height="{height}" '
            f'fill="{COLOURS[colour]}"/>'
        )
    for value, label in panel.scale.ticks():
        x = x0 + panel.scale(value) * PANEL
        out.append(f'<line x1="{x:.1f}" y1="{TOP}" x2="{x:.1f}" y2="{bottom}" stroke="#dde2e8" stroke-width="1"/>')
        for ty in (TOP - 6, bottom + 13):
            out.append(
                f'<text x="{x:.1f}" y="{ty}" font-size="10" text-anchor="middle" fill="{COLOURS["muted"]}">'
                f"{escape(label)}</text>"
            )
    if panel.reference is not None:
        x = x0 + panel.scale(panel.reference) * PANEL
        out.append(
            f'<line x1="{x:.1f}" y1="{TOP}" x2="{x:.1f}" y2="{bottom}" stroke="{COLOURS["reference"]}" '
            'stroke-width="1.2" stroke-dasharray="4 3"/>'
        )
    out.append(
        f'<rect x="{x0:g}" y="{TOP}" width="{PANEL}" height="{height}" fill="none" stroke="#b8c0ca" stroke-width="1"/>'
    )
    out.append(
        f'<text x="{x0 + PANEL / 2:g}" y="{bottom + 28}" font-size="10.5" text-anchor="middle" '
        f'fill="{COLOURS["muted"]}">{escape(panel.caption)}</text>'
    )
    for i, row in enumerate(panel.rows):
        y = TOP + i * ROW
        parts = []
        if row.note:
            parts.append(
                f'<text x="{x0 + 6:g}" y="{y + ROW - 5}" font-size="10.5" font-style="italic" '
                f'fill="{COLOURS["muted"]}">{escape(row.note)}</text>'
            )
        if row.values is not None:
            parts.append(_rug(row, panel.scale, x0, y))
        if row.segment is not None:
            a, b = (x0 + panel.scale(v) * PANEL for v in row.segment)
            parts.append(
                f'<line x1="{a:.1f}" y1="{y + ROW / 2:g}" x2="{b:.1f}" y2="{y + ROW / 2:g}" '
                f'stroke="{COLOURS["muted"]}" stroke-width="1.4"/>'
            )
        parts += [_mark(m, panel.scale, x0, y) for m in row.marks]
        title = f"<title>{escape(row.title)}</title>" if row.title else ""
        out.append(f"<g>{title}{''.join(parts)}</g>")
    return out


def render_chart(title: str, layers: list[tuple], panels: list[Panel]) -> str:
    """One ``<svg>``: a row per layer (name, status) and the panels side by side.

    Args:
        title: the chart's accessible name.
        layers: (layer name, status) per row, top to bottom; a third item names the status's colour
            (a key of ``STATUS_COLOURS``; default: the status's own).
        panels: each with one ``Row`` per layer, in the same order.
    """
    label_w = 12 + 6.4 * max([len(_label(layer[0])) for layer in layers] + [10])
    height = ROW * max(1, len(layers))
    x_status = label_w
    x_panels = label_w + STATUS + 10
    width = int(x_panels + len(panels) * (PANEL + GAP))
    total = TOP + height + BOTTOM
    out = [
        f'<svg width="{width}" height="{total}" viewBox="0 0 {width} {total}" '
        f'role="img" aria-label="{escape(title)}" font-family="{escape(FONT)}">',
        f"<title>{escape(title)}</title>",
        f'<rect width="{width}" height="{total}" fill="white"/>',
    ]
    for i in range(1, len(layers), 2):
        out.append(f'<rect x="0" y="{TOP + i * ROW}" width="{width}" height="{ROW}" fill="{COLOURS["stripe"]}"/>')
    out.append(
        f'<text x="{x_status:g}" y="{TOP - 6}" font-size="10" fill="{COLOURS["muted"]}">status</text>'
        f'<text x="4" y="{TOP - 6}" font-size="10" fill="{COLOURS["muted"]}">BN layer</text>'
    )
    for i, (name, status, *key) in enumerate(layers):
        y = TOP + i * ROW + ROW - 5
        colour = STATUS_COLOURS.get(key[0] if key else status, COLOURS["text"])
        out.append(
            f'<g><title>{escape(name)}</title><text x="4" y="{y}" font-size="11" fill="{COLOURS["text"]}">'
            f'{escape(_label(name))}</text><text x="{x_status:g}" y="{y}" font-size="10.5" fill="{colour}">'
            f"{escape(status)}</text></g>"
        )
    for j, panel in enumerate(panels):
        out += _panel(panel, x_panels + j * (PANEL + GAP), height)
    out.append("</svg>")
    return "\n".join(out)
