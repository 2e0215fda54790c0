"""The gateway's own metrics, beside the SPEC §6 ones its decisions and outcomes count.

Labels stay low-cardinality: agent, environment (live or twin), verdict, the upstream's name
(`agent/environment`), and for rehearsed faults the tool class (SPEC §6's label, never the tool's
name, which the agent chooses) and the fault; never a session, tool argument or decision id.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

UPSTREAM_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class GatewayMetrics:
    """Calls by verdict, upstream latency and errors, sessions and rehearsed faults, on one registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.calls = Counter("gatekeeper_gateway_calls_total", "tools/call requests through the gateway by verdict",
                             ["agent", "environment", "verdict"], registry=registry)
        self.upstream_latency = Histogram("gatekeeper_gateway_upstream_latency_seconds",
                                          "Latency of forwarded tools/call requests at the upstream",
                                          ["upstream"], buckets=UPSTREAM_BUCKETS, registry=registry)
        self.upstream_errors = Counter("gatekeeper_gateway_upstream_errors_total",
                                       "Forwarded calls that failed: kind=tool_error (isError), unavailable "
                                       "(unreachable, broken or timed out)", ["upstream", "kind"], registry=registry)
        self.sessions = Counter("gatekeeper_gateway_sessions_total", "MCP sessions opened through the gateway",
                                ["agent", "environment"], registry=registry)
        self.rehearsed_faults = Counter(
            "gatekeeper_gateway_rehearsed_faults_total",
            "Failures the gateway rehearsed in candidates' twin sessions (stages.twin.chaos): fault=error, timeout, "
            "partial, malformed, or latency (an added delay, counted beside the call's fault)",
            ["agent", "tool_class", "fault"], registry=registry)

    def rehearsed(self, agent: str, tool_class: str, *, fault: str | None, delay_ms: int) -> None:
        """Count the failure rehearsed on one allowed call (nothing when it runs as it is)."""
        if fault is not None:
            self.rehearsed_faults.labels(agent, tool_class, fault).inc()
        if delay_ms > 0:
            self.rehearsed_faults.labels(agent, tool_class, "latency").inc()
