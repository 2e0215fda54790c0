"""What a metrics source is asked and answers: the shared vocabulary of every source.

    MetricsSource (protocol)   tier_signals(requests, now=) -> SignalBatch

"No data" means one thing in every source: a number is None, never 0.0, when the candidate had
no traffic in the window to count (`known`); tests/gates/test_source_contract.py holds every
source to it. The sources themselves are in metric_sources.py (built-in, in-memory, `build_source`) and
prometheus_source.py.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

from gatekeeper.core.gates import SourceStatus
from gatekeeper.core.policy import ExtraQuery
from gatekeeper.core.tier_gate import TierSignals

Key = tuple[str, str]  # (agent, candidate version)


@dataclass(frozen=True)
class SignalRequest:
    """One candidate whose tier-gate numbers are wanted, over its policy's window."""

    agent: str
    version: str
    rollout_id: int
    window_s: float
    queries: tuple[ExtraQuery, ...] = ()
    tier_started_at: float | None = None  # the window never reaches back before the tier began
    compare: bool = False  # also wanted: both arms since the tier began (`gate.compare`)

    @property
    def key(self) -> Key:
        return (self.agent, self.version)

    def clamped_window_s(self, *, now: float) -> float:
        """Return the window, cut at the tier's start so that an earlier stage's traffic never counts."""
        if self.tier_started_at is None:
            return self.window_s
        return max(0.0, min(self.window_s, now - self.tier_started_at))


@dataclass(frozen=True)
class SignalBatch:
    """The answer to one cycle's requests: the source's status and each candidate's numbers."""

    status: SourceStatus
    signals: Mapping[Key, TierSignals] = field(default_factory=dict)
    queries: int = 0

    def for_request(self, request: SignalRequest) -> TierSignals | None:
        """Return the candidate's numbers; None when the source was unavailable."""
        if not self.status.available:
            return None
        return self.signals.get(request.key, TierSignals())


class MetricsSource(Protocol):
    """Anything that can answer a cycle's signal requests."""

    name: str

    def tier_signals(self, requests: Sequence[SignalRequest], *, now: float) -> SignalBatch: ...


def known(signals: TierSignals) -> TierSignals:
    """Return the numbers with "no data" as None, the same in every source.

    No sessions (or zero) in the window is no data, not zero sessions; so are no tool calls. Errors
    and overruns are counted among calls: zero while there are calls (no series of failures is
    none failed), no data without calls; spend likewise among sessions. A percentile is no data
    without outcomes (Prometheus answers NaN for a quantile of nothing).
    """
    sessions = _positive(signals.sessions)
    calls = _positive(signals.tool_calls)
    return replace(signals, sessions=sessions, tool_calls=calls,
                   errors=_among(signals.errors, calls), overruns=_among(signals.overruns, calls),
                   p95_latency_s=_finite(signals.p95_latency_s),
                   spend_dollars=_among(signals.spend_dollars, sessions))


def _positive(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) and value > 0 else None


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def _among(value: float | None, whole: float | None) -> float | None:
    if whole is None:
        return None
    return value if value is not None and math.isfinite(value) else 0.0


class MetricsUnavailable(Exception):
    """The source did not answer (refused, timed out, 5xx, or the breaker is open)."""


class QueryRejected(Exception):
    """Prometheus answered but refused the query (bad PromQL): an error of that check only."""


def window_text(seconds: float) -> str:
    """Render a window as a PromQL duration such as `600s`."""
    return f"{max(1, round(seconds))}s"


def percentile(values: Sequence[float], q: float) -> float | None:
    """Return the nearest-rank percentile `q` (0..1) of the values, or None when there are none."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def short_error(exc: BaseException) -> str:
    """Return the first line of an error (at most 300 characters), or its type's name."""
    return str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__


def by_window(requests: Iterable[SignalRequest]) -> dict[float, list[SignalRequest]]:
    """Group requests by their window, so that one query per window answers them all."""
    groups: dict[float, list[SignalRequest]] = defaultdict(list)
    for request in requests:
        groups[request.window_s].append(request)
    return groups
