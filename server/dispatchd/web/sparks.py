"""Inline SVG sparklines of a queue's trend, drawn on the server.

The page needs no chart library and no inline style (the CSP forbids both): a path with
a class, styled by dashboard.css. dashboard.js redraws the same path from /api/queues
with the same arithmetic (``sparkPath`` there mirrors ``spark_path`` here).
"""

from __future__ import annotations

from collections.abc import Sequence

from markupsafe import Markup

from dispatchd.web.trends import Trend

WIDTH = 120
HEIGHT = 24


def spark_path(values: Sequence[float | None]) -> str:
    """SVG path data: one point per bucket, scaled to the largest value; a None (no
    data) breaks the line."""
    present = [v for v in values if v is not None]
    top = max(present, default=0.0)
    scale = (HEIGHT - 2) / top if top > 0 else 0.0
    step = WIDTH / max(1, len(values) - 1)
    parts: list[str] = []
    pen_down = False
    for i, v in enumerate(values):
        if v is None:
            pen_down = False
            continue
        x = i * step
        y = HEIGHT - 1 - v * scale
        parts.append(f"{'L' if pen_down else 'M'}{x:.1f} {y:.1f}")
        pen_down = True
    return " ".join(parts)


def rate_label(v: float) -> str:
    return f"{v:.1f}/s"


def wait_label(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v * 1000:.0f} ms" if v < 10 else f"{v:.1f} s"


def _svg(kind: str, values: Sequence[float | None], latest: str, about: str) -> Markup:
    """Markup.format escapes every argument (they are numbers and our own words anyway)."""
    return Markup(
        "<svg class='spark {}' viewBox='0 0 {} {}' width={} height={} role=img>"
        "<title>{}</title><path d='{}'/></svg> <span class=latest>{}</span>"
    ).format(kind, WIDTH, HEIGHT, WIDTH, HEIGHT, about, spark_path(values), latest)


def _minutes(trend: Trend) -> str:
    seconds = len(trend.throughput) * trend.bucket_seconds
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s"


def throughput_cell(trend: Trend | None) -> Markup | str:
    """The throughput column: sparkline and the last complete bucket's figure."""
    if trend is None:
        return "-"  # past the queue cap of the trend rings
    about = f"jobs finished per second, last {_minutes(trend)}"
    return _svg("throughput", trend.throughput, rate_label(trend.throughput[-1]), about)


def wait_cell(trend: Trend | None) -> Markup | str:
    """The wait column: mean wait of the jobs dispatched in each bucket."""
    if trend is None:
        return "-"
    about = f"mean wait before dispatch, last {_minutes(trend)}"
    return _svg("wait", trend.wait, wait_label(trend.wait[-1]), about)


#: The overview chart's drawing box (the SVG scales it to the page's width).
CHART_WIDTH = 600
CHART_HEIGHT = 140


def chart_path(values: Sequence[float], top: float) -> str:
    """One series of the overview chart, scaled to ``top`` (the largest of all three
    series, so they share one axis). dashboard.js's chartPath mirrors it."""
    scale = (CHART_HEIGHT - 4) / top if top > 0 else 0.0
    step = CHART_WIDTH / max(1, len(values) - 1)
    return " ".join(
        f"{'L' if i else 'M'}{i * step:.1f} {CHART_HEIGHT - 2 - v * scale:.1f}"
        for i, v in enumerate(values)
    )
