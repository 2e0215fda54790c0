"""Server-rendered line charts: pure geometry from samples to SVG coordinates, no chart library.

A chart plots one value of the gate reports over the rollout (one point per evaluation),
draws the policy's threshold as a dashed line and marks every transition with a vertical
rule, so a release manager sees which numbers drove which step. Missing values (no data)
break the line instead of being drawn as zero.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

WIDTH, HEIGHT = 560, 190
LEFT, RIGHT, TOP, BOTTOM = 62, 14, 16, 28
PLOT_W, PLOT_H = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
ROLLBACK_ACTIONS = frozenset({"rollback", "kill", "abort"})
STOP_ACTIONS = frozenset({"pause", "hold"})


@dataclass(frozen=True)
class Point:
    x: float
    y: float
    label: str


@dataclass(frozen=True)
class Marker:
    """A transition drawn as a vertical rule; `kind` picks its colour."""

    x: float
    label: str
    title: str
    kind: str


@dataclass(frozen=True)
class Tick:
    at: float
    label: str


@dataclass(frozen=True)
class Chart:
    """Everything the SVG template needs; coordinates are in the viewBox's units."""

    key: str
    title: str
    path: str
    points: tuple[Point, ...]
    markers: tuple[Marker, ...]
    threshold_y: float | None
    threshold_label: str
    y_ticks: tuple[Tick, ...]
    x_ticks: tuple[Tick, ...]
    latest: str
    width: int = WIDTH
    height: int = HEIGHT
    left: int = LEFT
    top: int = TOP
    plot_w: int = PLOT_W
    plot_h: int = PLOT_H

    @property
    def empty(self) -> bool:
        """Return whether no evaluation carried this value."""
        return not self.points


@dataclass(frozen=True)
class Transition:
    """What a chart needs of a transition: when, what, and a sentence for the tooltip."""

    at: float
    action: str
    title: str


def line_chart(key: str, samples: Sequence[tuple[float, float | None]], *, title: str,
               span: tuple[float, float], transitions: Sequence[Transition] = (),
               threshold: float | None = None, fmt: Callable[[float], str] | None = None) -> Chart:
    """Return the chart of `samples` (time, value or None) over `span` (start, end epoch seconds)."""
    fmt = fmt or _plain
    start, end = span[0], max(span[1], span[0] + 1.0)
    finite = [v for _, v in samples if v is not None and math.isfinite(v)]
    top = _nice_top(max([*finite, threshold or 0.0, 0.0]))
    x = _scale((start, end), (LEFT, LEFT + PLOT_W))
    y = _scale((0.0, top), (TOP + PLOT_H, TOP))
    points = tuple(Point(round(x(t), 1), round(y(v), 1), f"{_clock(t)}  {fmt(v)}")
                   for t, v in samples if v is not None and math.isfinite(v))
    return Chart(
        key=key, title=title, path=_path(samples, x, y=y), points=points,
        markers=tuple(Marker(round(x(t.at), 1), t.action.replace("_", " "), t.title, _kind(t.action))
                      for t in transitions if start <= t.at <= end),
        threshold_y=round(y(threshold), 1) if threshold is not None else None,
        threshold_label=f"limit {fmt(threshold)}" if threshold is not None else "",
        y_ticks=tuple(Tick(round(y(top * i / 4), 1), fmt(top * i / 4)) for i in range(5)),
        x_ticks=tuple(Tick(round(x(t), 1), _clock(t, dated=end - start > 86400))
                      for t in _time_ticks(start, end)),
        latest=fmt(finite[-1]) if finite else "no data")


def _plain(value: float) -> str:
    return f"{value:g}"


def _scale(domain: tuple[float, float], out: tuple[float, float]) -> Callable[[float], float]:
    (lo, hi), (out_lo, out_hi) = domain, out
    span = (hi - lo) or 1.0
    return lambda v: out_lo + (v - lo) / span * (out_hi - out_lo)


def _nice_top(value: float) -> float:
    """Return a round axis maximum a little above `value` (1, 2 or 5 times a power of ten)."""
    if value <= 0 or not math.isfinite(value):
        return 1.0
    magnitude = 10 ** math.floor(math.log10(value * 1.1))
    return next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= value * 1.1)


def _path(samples: Sequence[tuple[float, float | None]], x: Callable[[float], float], *,
          y: Callable[[float], float]) -> str:
    parts: list[str] = []
    pen_down = False
    for t, v in samples:
        if v is None or not math.isfinite(v):
            pen_down = False  # a gap: no data must not look like zero
            continue
        parts.append(f"{'L' if pen_down else 'M'}{x(t):.1f},{y(v):.1f}")
        pen_down = True
    return " ".join(parts)


def _time_ticks(start: float, end: float, count: int = 4) -> list[float]:
    return [start + (end - start) * i / count for i in range(count + 1)]


def _clock(epoch: float, *, dated: bool = False) -> str:
    return datetime.fromtimestamp(epoch, tz=UTC).strftime("%m-%d %H:%M" if dated else "%H:%M")


def _kind(action: str) -> str:
    if action in ROLLBACK_ACTIONS:
        return "back"
    if action in STOP_ACTIONS:
        return "stop"
    return "forward"
