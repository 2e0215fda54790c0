"""Server-rendered line charts: pure geometry from samples to SVG coordinates, no chart library.

A chart plots one value of the gate reports over the rollout (one point per evaluation),
draws the policy's threshold as a dashed line and marks every transition with a vertical
rule, so a release manager sees which numbers drove which step. Missing values (no data)
break the line instead of being drawn as zero. Beside the candidate's gate values, a chart may
draw the stable arm's series over the same span (dotted, named in the legend, never by colour
alone) and state the current comparison with stable.

The time axis steps by a round interval (5 s … 7 d) chosen for the span, so its labels are
distinct and carry seconds only when the step needs them. Transition labels are stacked in
up to three lanes so that none overlaps another; one that fits nowhere keeps its rule and
tooltip only. A share (a rate, a percentage) never gets an axis above 100%.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

WIDTH, HEIGHT = 560, 190
LEFT, RIGHT, TOP, BOTTOM = 62, 14, 16, 28
PLOT_W, PLOT_H = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
MARKER_FONT_W = 5.4  # width of one character of a 9px marker label, in viewBox units
MARKER_LANES = 3
TIME_STEPS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400,
              172800, 604800)
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
    label_y: float = TOP + 10  # "" labels (no room in any lane) are not drawn
    anchor: str = "start"


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
    baseline_path: str = ""  # the stable arm over the same span, drawn dotted beside the candidate's line
    baseline_points: tuple[Point, ...] = ()
    baseline_label: str = ""
    baseline_latest: str = ""
    comparison: str = ""  # the current gate report's comparison with stable, as a sentence
    width: int = WIDTH
    height: int = HEIGHT
    left: int = LEFT
    top: int = TOP
    plot_w: int = PLOT_W
    plot_h: int = PLOT_H

    @property
    def empty(self) -> bool:
        """Return whether neither the evaluations nor the stable arm carried this value."""
        return not self.points and not self.baseline_points


@dataclass(frozen=True)
class Transition:
    """What a chart needs of a transition: when, what, and a sentence for the tooltip."""

    at: float
    action: str
    title: str


def line_chart(key: str, samples: Sequence[tuple[float, float | None]], *, title: str,
               span: tuple[float, float], transitions: Sequence[Transition] = (),
               threshold: float | None = None, fmt: Callable[[float], str] | None = None,
               ceiling: float | None = None, baseline: Sequence[tuple[float, float | None]] = (),
               baseline_label: str = "", comparison: str = "") -> Chart:
    """Return the chart of `samples` (time, value or None) over `span` (start, end epoch seconds).

    `ceiling` caps the axis for shares (1.0 for a rate, 100 for a percentage) unless a value exceeds it.
    `baseline` is the stable arm's series over the same span, named by `baseline_label`.
    """
    fmt = fmt or _plain
    start, end = span[0], max(span[1], span[0] + 1.0)
    finite = [v for _, v in samples if v is not None and math.isfinite(v)]
    stable = [v for _, v in baseline if v is not None and math.isfinite(v)]
    highest = max([*finite, *stable, threshold or 0.0, 0.0])
    top = _nice_top(highest)
    if ceiling is not None and highest <= ceiling:
        top = min(top, ceiling)
    x = _scale((start, end), (LEFT, LEFT + PLOT_W))
    y = _scale((0.0, top), (TOP + PLOT_H, TOP))
    points = _points(samples, x, y=y, fmt=fmt)
    step = time_step(start, end)
    return Chart(
        key=key, title=title, path=_path(samples, x, y=y), points=points,
        markers=markers([t for t in transitions if start <= t.at <= end], x),
        threshold_y=round(y(threshold), 1) if threshold is not None else None,
        threshold_label=f"limit {fmt(threshold)}" if threshold is not None else "",
        y_ticks=tuple(Tick(round(y(top * i / 4), 1), fmt(top * i / 4)) for i in range(5)),
        x_ticks=tuple(Tick(round(x(t), 1), _clock(t, step=step, dated=end - start > 86400))
                      for t in time_ticks(start, end, step=step)),
        latest=fmt(finite[-1]) if finite else "no data",
        baseline_path=_path(baseline, x, y=y), baseline_points=_points(baseline, x, y=y, fmt=fmt, arm="stable"),
        baseline_label=baseline_label if baseline else "", baseline_latest=fmt(stable[-1]) if stable else "no data",
        comparison=comparison)


def time_step(start: float, end: float, *, most: int = 6) -> int:
    """Return the smallest round step (seconds) that puts at most `most` ticks on the span."""
    span = max(end - start, 1.0)
    return next((s for s in TIME_STEPS if span / s <= most - 1), TIME_STEPS[-1] * math.ceil(span / TIME_STEPS[-1] / 5))


def time_ticks(start: float, end: float, *, step: int) -> list[float]:
    """Return the multiples of `step` within the span (UTC-aligned, so labels are round)."""
    first = math.ceil(start / step) * step
    return [float(first + i * step) for i in range(int((end - first) // step) + 1)]


def markers(transitions: Sequence[Transition], x: Callable[[float], float]) -> tuple[Marker, ...]:
    """Return a marker per transition, labels stacked in lanes so that no two overlap."""
    lanes: list[float] = [-math.inf] * MARKER_LANES  # where each lane's last label ends
    placed = []
    for move in sorted(transitions, key=lambda t: t.at):
        at, text = round(x(move.at), 1), move.action.replace("_", " ")
        width = len(text) * MARKER_FONT_W + 4
        anchor = "end" if at + width > LEFT + PLOT_W else "start"
        left = at - width if anchor == "end" else at
        lane = next((i for i, ends in enumerate(lanes) if left > ends), None)
        if lane is not None:
            lanes[lane] = left + width
        placed.append(Marker(at, text if lane is not None else "", move.title, _kind(move.action),
                             label_y=TOP + 10 + 11 * (lane or 0), anchor=anchor))
    return tuple(placed)


def _points(samples: Sequence[tuple[float, float | None]], x: Callable[[float], float], *,
            y: Callable[[float], float], fmt: Callable[[float], str], arm: str = "") -> tuple[Point, ...]:
    prefix = f"{arm} " if arm else ""
    return tuple(Point(round(x(t), 1), round(y(v), 1), f"{prefix}{_clock(t, step=1)}  {fmt(v)}")
                 for t, v in samples if v is not None and math.isfinite(v))


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


def _clock(epoch: float, *, step: int, dated: bool = False) -> str:
    moment = datetime.fromtimestamp(epoch, tz=UTC)
    if step >= 86400:
        return moment.strftime("%m-%d")
    shown = moment.strftime("%H:%M:%S" if step < 60 else "%H:%M")
    return f"{moment.strftime('%m-%d')} {shown}" if dated else shown


def _kind(action: str) -> str:
    if action in ROLLBACK_ACTIONS:
        return "back"
    if action in STOP_ACTIONS:
        return "stop"
    return "forward"
