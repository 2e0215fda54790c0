"""The twin's rehearsed failures applied in the path: the decision's `chaos` on an allowed call.

Both paths (the lean HTTP path and the SDK path) apply it as the SDK's guard does (README, *Rehearsed
failures*): first the added latency (`delay_ms`, awaited: the event loop serves other calls
meanwhile), then the fault:
- `error`: the call is NOT forwarded; the agent gets a tool error; the outcome is an error;
- `timeout`: the call IS forwarded (its side effect happens), the agent gets a timeout instead of the
  answer (ambiguous success); the outcome is an error;
- `partial` / `malformed`: the call is forwarded and its result truncated / garbled; the outcome is
  the upstream's (ok unless it answered `isError`).
The reported latency includes the delay. Only a candidate's twin session is ever told to inject. Each
rehearsal is counted in `gatekeeper_gateway_rehearsed_faults_total{agent,tool_class,fault}`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import anyio

from gatekeeper.gateway.deciding import Fault, Ruling, mcp_error, mcp_result
from gatekeeper.gateway.gateway_metrics import GatewayMetrics


async def delayed(ruling: Ruling, *, agent: str, metrics: GatewayMetrics) -> Fault | None:
    """Count and wait the rehearsed latency of an allowed call; return its rehearsed fault (None: run it as it is)."""
    injection = ruling.chaos
    if injection is None:
        return None
    metrics.rehearsed(agent, ruling.tool_class, fault=injection.fault, delay_ms=injection.delay_ms)
    # The event loop's timers may fire up to a millisecond early (uvloop rounds them), so sleep until
    # the whole delay has passed on the monotonic clock: the rehearsed latency is a floor, as promised.
    deadline = time.monotonic() + injection.delay_ms / 1000
    for _ in range(10):
        left = deadline - time.monotonic()
        if left <= 0:
            break
        await anyio.sleep(left + 0.0005)
    return injection.fault


def outcome_status(fault: Fault | None, *, is_error: bool) -> str:
    """Return the outcome to report for a forwarded call: a rehearsed timeout is an error."""
    return "error" if is_error or fault == "timeout" else "ok"


def rehearsed(result: Mapping[str, Any] | None, tool: str, fault: Fault, *, modern: bool) -> dict[str, Any]:
    """Return the tools/call result the agent gets instead of `result` (the upstream's, None when not called)."""
    found = mcp_error(tool, fault) if fault in ("error", "timeout") else mcp_result(result or {}, fault)
    if modern:
        found.setdefault("resultType", "complete")
    return found
