"""The demo's terminal: a line per transition with its reason and numbers, and a summary per agent."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from gatekeeper.cli.ops import Remote

NUMBERS = ("error_rate", "p95_latency_s", "cost_per_session", "sessions", "calls", "errors", "pass_rate", "runs",
           "agreement", "violation_rate")


def transition_line(agent: str, entry: dict[str, Any], *, elapsed: float) -> str:
    """Return one terminal line for a transition: when, where from and to, who, why, on which numbers."""
    before, after = entry.get("from") or {}, entry["to"]
    where = f"{_tier(before)} -> {_tier(after)}" if before else _tier(after)
    numbers = _numbers(entry.get("metrics") or {})
    line = f"[{_clock(elapsed)}] {agent:<15} {entry['action']:<12} {where:<36} by {entry['actor']}: {entry['reason']}"
    return f"{line} ({numbers})" if numbers else line


def summary_line(agent: dict[str, Any]) -> str:
    """Return the one-line summary of an agent's rollout and newest gate report."""
    rollout = agent.get("rollout") or {}
    report = agent.get("gate_report") or {}
    candidate = rollout.get("candidate_version", "-")
    done = rollout.get("state") == "completed"
    versions = f"{candidate} (stable)" if done else f"{agent.get('stable_version') or '-'}->{candidate}"
    gate = f"gate {report.get('result', '-')}"
    if report.get("reasons") and report.get("result") != "promote":
        gate += f": {report['reasons'][0]}"
    approvals = f"  approvals pending: {agent['pending_approvals']}" if agent.get("pending_approvals") else ""
    return (f"  {agent['name']:<15} {versions:<8} {rollout.get('tier_label', '-'):<15} "
            f"{rollout.get('state', '-'):<12} {gate[:70]}{approvals}")


class Progress(threading.Thread):
    """Poll the API each second; print new transitions at once and the summaries every `every_s`."""

    def __init__(self, rm: Remote, agents: list[str], *, stop: threading.Event, echo: Callable[[str], None],
                 every_s: float = 10.0) -> None:
        super().__init__(name="demo-progress", daemon=True)
        self.rm, self.agents, self.stop, self.echo, self.every_s = rm, agents, stop, echo, every_s
        self.started = time.monotonic()
        self.seen: set[int] = set()

    def run(self) -> None:
        last_summary = 0.0
        while not self.stop.wait(1.0):
            self.poll_transitions()
            if time.monotonic() - last_summary >= self.every_s:
                last_summary = time.monotonic()
                self.print_summary()

    def poll_transitions(self) -> None:
        """Print every transition not printed yet, oldest first."""
        for agent in self.agents:
            page = self.rm.call("GET", f"/v1/agents/{agent}/history?kind=transition&limit=50")
            for entry in reversed(page["items"]):
                if entry["id"] not in self.seen:
                    self.seen.add(entry["id"])
                    self.echo(transition_line(agent, entry, elapsed=time.monotonic() - self.started))

    def print_summary(self) -> None:
        """Print one line per agent."""
        self.echo(f"[{_clock(time.monotonic() - self.started)}] status:")
        for agent in self.rm.call("GET", "/v1/agents"):
            self.echo(summary_line(agent))


def _tier(where: dict[str, Any]) -> str:
    name = where.get("label") or f"{where.get('stage')} tier {where.get('tier')}"
    return f"{name} ({where.get('state')})"


def _numbers(metrics: dict[str, Any]) -> str:
    values = {**metrics, **(metrics.get("values") or {})}
    shown = [f"{k}={_fmt(values[k])}" for k in NUMBERS if isinstance(values.get(k), int | float)]
    return ", ".join(shown)


def _fmt(value: float) -> str:
    return f"{value:.3g}"


def _clock(seconds: float) -> str:
    return f"{int(seconds) // 60:02d}:{int(seconds) % 60:02d}"
