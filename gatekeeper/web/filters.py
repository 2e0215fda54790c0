"""Jinja filters that print times, durations, money and gate figures the same way on every page."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from typing import Any

from flask import Flask

RATE_WORDS = ("rate", "agreement", "ratio")
COUNT_WORDS = ("sessions", "runs", "calls", "count", "scenarios")


def install(app: Flask) -> None:
    """Register the dashboard's filters on the app's Jinja environment."""
    app.add_template_filter(utc, "utc")
    app.add_template_filter(duration, "duration")
    app.add_template_filter(micros, "micros")
    app.add_template_filter(figure, "figure")
    app.add_template_filter(short_revision, "short_revision")
    app.add_template_filter(label, "label")
    app.add_template_filter(pretty_arguments, "arguments")
    app.add_template_filter(dollars, "dollars")


def utc(epoch: float | datetime | None) -> str:
    """Render an epoch time (or datetime) as `2024-05-01 12:00:03 UTC`."""
    if epoch is None:
        return "—"
    moment = epoch if isinstance(epoch, datetime) else datetime.fromtimestamp(epoch, tz=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def duration(seconds: float | None) -> str:
    """Render a number of seconds as `45s`, `12m 05s`, `3h 20m` or `2d 4h`."""
    if seconds is None or not math.isfinite(seconds):
        return "—"
    whole = int(max(0.0, seconds))
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"


def micros(amount: int | None) -> str:
    """Render micro-dollars as dollars."""
    if amount is None:
        return "—"
    dollars = amount / 1_000_000
    return f"${dollars:,.2f}" if amount % 10_000 == 0 else f"${dollars:,.4f}"


def dollars(amount: float | None) -> str:
    """Render dollars: cents when whole cents, else four decimals."""
    if amount is None:
        return "—"
    return micros(round(amount * 1_000_000))


def figure(value: Any, name: str = "") -> str:
    """Render a gate value by what its name says it is: a rate, a latency, money, a count."""
    if value is None:
        return "no data"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if not math.isfinite(value):
        return "NaN" if math.isnan(value) else str(value)
    return _by_name(float(value), name.lower())


def _by_name(value: float, key: str) -> str:
    if "latency" in key:
        return f"{value:.2f} s" if value >= 1 else f"{value * 1000:.0f} ms"
    if "cost" in key or "spend" in key:
        return f"${value:.3f}"
    if "percent" in key:
        return f"{value:g}%"
    if any(word in key for word in RATE_WORDS):
        return f"{value * 100:.2f}%"
    if "age" in key or key.endswith("_s"):
        return duration(value)
    if any(word in key for word in COUNT_WORDS):
        return f"{value:,.0f}"
    return f"{value:g}"


def short_revision(revision: str | None) -> str:
    """Return the first 12 characters of a policy revision hash."""
    return (revision or "—")[:12]


def label(name: str) -> str:
    """Turn a check or value name into words: `p95_latency_s` -> `p95 latency`."""
    return name.removesuffix("_s").replace("_", " ")


def pretty_arguments(arguments: dict[str, Any] | str | None) -> str:
    """Render a call's (already redacted) arguments as indented JSON; stored text that is not JSON as is."""
    if arguments is None or arguments == "":
        return ""
    if isinstance(arguments, str):
        try:
            loaded: Any = json.loads(arguments)
        except ValueError:
            return arguments
        return json.dumps(loaded, indent=2, sort_keys=True, ensure_ascii=False)
    return json.dumps(arguments, indent=2, sort_keys=True, ensure_ascii=False)
