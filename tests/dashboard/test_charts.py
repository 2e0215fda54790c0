"""The chart geometry and the figure formatting, as tables of fixed inputs."""

from __future__ import annotations

import math

import pytest

from gatekeeper.web import charts
from gatekeeper.web.filters import duration, figure, label, micros

T0 = 1_700_000_000.0


@pytest.mark.parametrize(("value", "name", "shown"), [
    (0.0123, "error_rate", "1.23%"),
    (0.9, "agreement", "90.00%"),
    (1.5, "p95_latency_s", "1.50 s"),
    (0.25, "p95_latency_s", "250 ms"),
    (0.4, "cost_per_session", "$0.400"),
    (5.0, "traffic_percent", "5%"),
    (1234.0, "sessions", "1,234"),
    (3600.0, "twin_snapshot_age_s", "1h 00m"),
    (None, "error_rate", "no data"),
    (float("nan"), "error_rate", "NaN"),
    ("text", "error_rate", "text"),
    (True, "sessions", "True"),
    (2.5, "something_else", "2.5"),
])
def test_figure_prints_a_value_by_what_its_name_says(value: object, name: str, shown: str) -> None:
    assert figure(value, name) == shown


@pytest.mark.parametrize(("seconds", "shown"), [
    (0, "0s"), (59.9, "59s"), (61, "1m 01s"), (3725, "1h 02m"), (2 * 86400 + 3600 * 5, "2d 5h"),
    (-5, "0s"), (None, "—"), (math.inf, "—"),
])
def test_duration(seconds: float | None, shown: str) -> None:
    assert duration(seconds) == shown


@pytest.mark.parametrize(("amount", "shown"), [(350_000, "$0.35"), (10_000, "$0.01"), (1234, "$0.0012"),
                                               (None, "—")])
def test_micros(amount: int | None, shown: str) -> None:
    assert micros(amount) == shown


def test_label_turns_names_into_words() -> None:
    assert [label(n) for n in ("p95_latency_s", "error_rate", "sessions")] == ["p95 latency", "error rate", "sessions"]


def test_missing_values_break_the_line_instead_of_dropping_to_zero() -> None:
    samples = [(T0, 0.01), (T0 + 10, None), (T0 + 20, 0.02), (T0 + 30, 0.03)]
    chart = charts.line_chart("error_rate", samples, title="Error rate", span=(T0, T0 + 30))
    moves = [part[0] for part in chart.path.split()]
    assert moves == ["M", "M", "L"]
    assert len(chart.points) == 3 and chart.latest == "0.03"


def test_points_span_the_plot_and_the_axis_tops_the_highest_value_or_threshold() -> None:
    chart = charts.line_chart("x", [(T0, 0.0), (T0 + 100, 4.0)], title="X", span=(T0, T0 + 100), threshold=8.0)
    first, last = chart.points
    assert (first.x, last.x) == (charts.LEFT, charts.LEFT + charts.PLOT_W)
    assert first.y == charts.TOP + charts.PLOT_H
    assert chart.y_ticks[-1].label == "10"  # 8 * 1.1 rounds up to 10
    assert chart.threshold_y is not None and charts.TOP < chart.threshold_y < last.y
    assert chart.threshold_label == "limit 8"


def test_transitions_become_markers_coloured_by_direction_and_outside_ones_are_dropped() -> None:
    moves = [charts.Transition(T0 + 50, "promote", "up"), charts.Transition(T0 + 60, "rollback", "down"),
             charts.Transition(T0 + 70, "pause", "stop"), charts.Transition(T0 - 10, "promote", "before")]
    chart = charts.line_chart("x", [], title="X", span=(T0, T0 + 100), transitions=moves)
    assert [(m.kind, m.label) for m in chart.markers] == [("forward", "promote"), ("back", "rollback"),
                                                          ("stop", "pause")]
    assert chart.markers[0].x == charts.LEFT + charts.PLOT_W / 2
    assert chart.empty and chart.latest == "no data"


def test_a_zero_length_span_and_all_zero_values_still_draw() -> None:
    chart = charts.line_chart("x", [(T0, 0.0)], title="X", span=(T0, T0))
    assert chart.points[0].x == charts.LEFT and chart.y_ticks[-1].label == "1"
    assert all(math.isfinite(t.at) for t in chart.x_ticks)


@pytest.mark.parametrize(("minutes", "step_s", "seconds_shown"), [
    (1.5, 30, True),       # the demo: a rollout of ninety seconds
    (4, 60, False),
    (25, 300, False),
    (150, 1800, False),
    (3 * 24 * 60, 86400, False),
])
def test_time_labels_are_distinct_round_and_few(minutes: float, step_s: int, seconds_shown: bool) -> None:
    start = T0 + 7  # not on a round second
    chart = charts.line_chart("x", [(start, 1.0)], title="X", span=(start, start + minutes * 60))
    labels = [t.label for t in chart.x_ticks]
    assert 2 <= len(labels) <= 6 and len(set(labels)) == len(labels), labels
    assert charts.time_step(start, start + minutes * 60) == step_s
    assert all((len(label.split(":")) == 3) == seconds_shown for label in labels if ":" in label)
    assert all(charts.LEFT <= t.at <= charts.LEFT + charts.PLOT_W for t in chart.x_ticks)


def test_transition_labels_close_together_never_overlap() -> None:
    moves = [charts.Transition(T0 + 30 + i, action, action) for i, action in
             enumerate(("promote", "hold", "release", "promote", "kill"))]
    chart = charts.line_chart("x", [], title="X", span=(T0, T0 + 90), transitions=moves)
    drawn = [m for m in chart.markers if m.label]
    assert len(chart.markers) == 5 and 1 <= len(drawn) <= charts.MARKER_LANES
    boxes = []
    for m in drawn:
        width = len(m.label) * charts.MARKER_FONT_W
        left = m.x - width if m.anchor == "end" else m.x
        boxes.append((m.label_y, left, left + width))
    for i, (lane, left, right) in enumerate(boxes):
        for other_lane, other_left, other_right in boxes[i + 1:]:
            assert lane != other_lane or right <= other_left or other_right <= left
    assert all(m.title for m in chart.markers)  # an unlabelled marker keeps its tooltip


def test_a_marker_at_the_right_edge_is_labelled_leftwards() -> None:
    chart = charts.line_chart("x", [], title="X", span=(T0, T0 + 100),
                              transitions=[charts.Transition(T0 + 100, "promote", "done")])
    assert chart.markers[0].anchor == "end"


@pytest.mark.parametrize(("key", "values", "ceiling", "top"), [
    ("traffic_percent", [1.0, 5.0, 100.0], 100.0, "100%"),
    ("traffic_percent", [25.0], 100.0, "50%"),
    ("error_rate", [0.4, 0.95], 1.0, "100.00%"),
    ("error_rate", [0.01], 1.0, "2.00%"),
])
def test_shares_never_get_an_axis_above_100_percent(key: str, values: list[float], ceiling: float, top: str) -> None:
    samples = [(T0 + i, v) for i, v in enumerate(values)]
    chart = charts.line_chart(key, samples, title=key, span=(T0, T0 + 10), ceiling=ceiling,
                              fmt=lambda v: figure(v, key))
    assert chart.y_ticks[-1].label == top
    assert all(charts.TOP <= p.y <= charts.TOP + charts.PLOT_H for p in chart.points)
