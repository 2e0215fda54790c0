"""The gateway's own metrics, beside the SPEC §6 ones its decisions and outcomes count.

Labels stay low-cardinality: agent, environment (live or twin), verdict, and the upstream's name
(`agent/environment`); never a session, tool argument or decision id.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

UPSTREAM_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class GatewayMetrics:
    """Calls by verdict, upstream latency and upstream errors, on one registry."""

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
