"""Server-side SVG charts for the dashboard: no JavaScript, no CDN, nothing to fetch at run time.

Every chart is an accessible image: `role="img"`, a `<title>` and a `<desc>` that carries the numbers as
text (aria-labelledby points at both), so a screen reader hears what a sighted user sees. Colours are
the same few high-contrast ones on a white background (WCAG AA against white for text and bars)."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

from app.measures.results import MeasureResult

# Colours: text #1a1a1a, bar #1f5fa8 (7.0:1 on white), below target #b3261e (6.0:1), track #e6e6e6,
# target line #1a1a1a; overdue #b3261e, due soon #8a5a00 (5.9:1), other open #1f5fa8.
TEXT = "#1a1a1a"
BAR = "#1f5fa8"
BELOW = "#b3261e"
TRACK = "#e6e6e6"
DUE_SOON = "#8a5a00"
FONT = 'font-family="system-ui, sans-serif"'

_ids = itertools.count(1)


def _id(prefix: str) -> str:
    """Unique ids within a page: several charts on one page must not share title/desc ids."""
    return f"{prefix}-{next(_ids)}"


def percent(value: float | None) -> str:
    return "no data" if value is None else f"{value * 100:.1f}%"


def _a(value: object) -> str:
    return escape(str(value), quote=True)


def _open_svg(
    width: int, height: int, title: str, desc: str, prefix: str, chart_id: str | None
) -> tuple[list[str], str]:
    base = _a(chart_id) if chart_id else _id(prefix)
    tid, did = f"{base}-title", f"{base}-desc"
    head = [
        f'<svg xmlns="http://www.w3.org/2000/svg" role="img" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" aria-labelledby="{tid} {did}" {FONT} font-size="13">',
        f'<title id="{tid}">{escape(title)}</title>',
        f'<desc id="{did}">{escape(desc)}</desc>',
    ]
    return head, "</svg>"


def rate_chart(
    title: str,
    numerator: int,
    denominator: int,
    rate: float | None,
    target: float | None,
    *,
    numerator_label: str = "numerator",
    denominator_label: str = "denominator",
    width: int = 480,
    chart_id: str | None = None,
) -> str:
    """A bullet chart: the rate as a bar on a 0-100 % track, the target as a vertical line. The bar is
    red below target, blue at or above it (and the text says which, not only the colour)."""
    height = 64
    left, right = 8, width - 8
    track = right - left
    meets = None if rate is None or target is None else rate >= target
    desc = f"{title}: {percent(rate)} ({numerator} {numerator_label} of {denominator} {denominator_label})"
    if target is not None:
        desc += f"; target {percent(target)}, " + ("met" if meets else "not met" if meets is False else "no data")
    parts, close = _open_svg(width, height, title, desc + ".", "rate", chart_id)
    parts.append(f'<rect x="{left}" y="24" width="{track}" height="18" fill="{TRACK}"/>')
    if rate is not None:
        colour = BELOW if meets is False else BAR
        parts.append(f'<rect x="{left}" y="24" width="{track * rate:.1f}" height="18" fill="{colour}"/>')
    if target is not None:
        x = left + track * target
        parts.append(f'<line x1="{x:.1f}" y1="18" x2="{x:.1f}" y2="48" stroke="{TEXT}" stroke-width="2"/>')
        parts.append(f'<text x="{x:.1f}" y="60" text-anchor="middle" fill="{TEXT}">target {_a(percent(target))}</text>')
    label = f"{percent(rate)}  ({numerator} / {denominator})"
    parts.append(f'<text x="{left}" y="16" fill="{TEXT}">{escape(label)}</text>')
    parts.append(close)
    return "".join(parts)


@dataclass(frozen=True, slots=True)
class RoleLoad:
    role: str
    open: int
    due_soon: int
    overdue: int


def overdue_chart(title: str, rows: Sequence[RoleLoad], *, width: int = 480, chart_id: str | None = None) -> str:
    """Horizontal stacked bars per role: overdue, due soon, and the rest of the open tasks."""
    bar_h, gap, label_w, top = 18, 10, 90, 8
    height = top + max(1, len(rows)) * (bar_h + gap) + 24
    scale_max = max((r.open for r in rows), default=0) or 1
    track = width - label_w - 90
    desc = (
        "; ".join(f"{r.role}: {r.overdue} overdue, {r.due_soon} due soon, {r.open} open" for r in rows)
        if rows
        else "no open tasks"
    )
    parts, close = _open_svg(width, height, title, f"{title}. {desc}.", "overdue", chart_id)
    for i, r in enumerate(rows):
        y = top + i * (bar_h + gap)
        parts.append(f'<text x="0" y="{y + 13}" fill="{TEXT}">{escape(r.role)}</text>')
        x = float(label_w)
        rest = max(r.open - r.overdue - r.due_soon, 0)
        for value, colour in ((r.overdue, BELOW), (r.due_soon, DUE_SOON), (rest, BAR)):
            w = track * value / scale_max
            if w > 0:
                parts.append(f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="{bar_h}" fill="{colour}"/>')
            x += w
        parts.append(f'<text x="{x + 6:.1f}" y="{y + 13}" fill="{TEXT}">{r.overdue} / {r.open}</text>')
    legend_y = height - 8
    for j, (name, colour) in enumerate((("overdue", BELOW), ("due soon", DUE_SOON), ("other open", BAR))):
        lx = label_w + j * 110
        parts.append(f'<rect x="{lx}" y="{legend_y - 10}" width="10" height="10" fill="{colour}"/>')
        parts.append(f'<text x="{lx + 14}" y="{legend_y}" fill="{TEXT}">{name}</text>')
    parts.append(close)
    return "".join(parts)


def chart_for(result: MeasureResult, *, width: int = 480, chart_id: str | None = None) -> str:
    """The chart a dashboard shows for a measure: overdue-by-role bars for the task snapshot
    (`extras["by_role"]`), a rate bullet with its target for every other measure."""
    by_role = result.extras.get("by_role")
    if result.unit == "tasks" and isinstance(by_role, list):
        rows = [RoleLoad(r["role"], r["open"], r["due_soon"], r["overdue"]) for r in by_role]
        return overdue_chart(result.title, rows, width=width, chart_id=chart_id or f"chart-{result.key}")
    return rate_chart(
        result.title,
        result.numerator,
        result.denominator,
        result.rate,
        result.target,
        numerator_label=result.numerator_label,
        denominator_label=result.denominator_label,
        width=width,
        chart_id=chart_id or f"chart-{result.key}",
    )
