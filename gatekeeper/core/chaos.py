"""Rehearsed failures of the twin (`stages.twin.chaos`): what to inject into one allowed call, deterministically.

A twin session's allowed call may be told to fail the way tools fail in production. The draw is a
hash of (session seed, tool, the call's index in the session) mapped onto [0, 1), so the same seed
injects the same failures on every run and a failed rehearsal can be repeated exactly.

The contract (the decision answer's `chaos`, applied by the SDK and the MCP gateway alike):
- `delay_ms`: wait this long before the call (added latency);
- fault `error`: the tool is NOT called; the agent gets a tool error;
- fault `timeout`: the tool IS called (its side effect happens), but the agent gets a timeout
  (ambiguous success); the outcome is reported as an error;
- fault `partial`: the tool runs; the agent gets a truncated result (`truncate`);
- fault `malformed`: the tool runs; the agent gets a garbled result (`garble`).
Only one fault per call: one uniform draw falls into error, timeout, partial, malformed or none, in
that order of the rates; a second draw decides the added latency.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

Fault = Literal["error", "timeout", "partial", "malformed"]
FAULTS: tuple[Fault, ...] = ("error", "timeout", "partial", "malformed")
GARBLE_MARK = "\ufffd"  # what a garbled text ends with: the replacement character, then a broken JSON opening


@dataclass(frozen=True)
class ToolChaos:
    """The failures rehearsed for one tool (or tool class): rates in [0, 1], latency in seconds."""

    error_rate: float = 0.0
    timeout_rate: float = 0.0
    partial_rate: float = 0.0
    malformed_rate: float = 0.0
    latency_s: float = 0.0
    latency_rate: float = 1.0  # share of calls that get the added latency

    def rate(self, fault: Fault) -> float:
        """Return the rate of one fault."""
        rates: dict[str, float] = {"error": self.error_rate, "timeout": self.timeout_rate,
                                   "partial": self.partial_rate, "malformed": self.malformed_rate}
        return rates[fault]


@dataclass(frozen=True)
class Injection:
    """What to inject into one call: a fault (or none) and a delay before it."""

    fault: Fault | None
    delay_ms: int

    @property
    def empty(self) -> bool:
        """Return whether nothing is injected."""
        return self.fault is None and self.delay_ms == 0

    def as_json(self) -> dict[str, Any] | None:
        """Return the decision answer's `chaos`: null when nothing is injected, else {fault, delay_ms}."""
        return None if self.empty else {"fault": self.fault, "delay_ms": self.delay_ms}


NOTHING = Injection(None, 0)


def settings_for(chaos: Mapping[str, ToolChaos], *, tool: str, tool_class: str) -> ToolChaos | None:
    """Return the chaos of a tool: its own entry, else its class's, else None."""
    return chaos.get(tool) or chaos.get(tool_class)


def draw(seed: str, tool: str, index: int, *, salt: str) -> float:
    """Return a uniform number in [0, 1) fixed by (seed, tool, index, salt): the same on every run."""
    key = json.dumps([seed, tool, index, salt], separators=(",", ":")).encode()
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big") / 2.0 ** 64


def inject(settings: ToolChaos | None, *, seed: str, tool: str, index: int) -> Injection:
    """Return what to inject into the `index`-th call of a session (1 = its first); NOTHING without settings."""
    if settings is None:
        return NOTHING
    fault: Fault | None = None
    point, edge = draw(seed, tool, index, salt="fault"), 0.0
    for kind in FAULTS:
        edge += settings.rate(kind)
        if point < edge:
            fault = kind
            break
    delayed = settings.latency_s > 0 and draw(seed, tool, index, salt="latency") < settings.latency_rate
    delay_ms = round(settings.latency_s * 1000) if delayed else 0
    return NOTHING if fault is None and delay_ms == 0 else Injection(fault, delay_ms)


# -- applying a fault to a result, transport-independent (the SDK keeps its own copy: it installs alone) --


def truncate(result: Any) -> Any:
    """Return a partial result: the first half of a text, list or mapping (of a one-field mapping's value);
    a scalar becomes None."""
    if isinstance(result, (str, bytes)):
        return result[: len(result) // 2]
    if isinstance(result, (list, tuple)):
        return type(result)(result[: len(result) // 2])
    if isinstance(result, Mapping):
        if len(result) == 1:  # one field: its value cut short
            return {key: truncate(value) for key, value in result.items()}
        return {key: result[key] for key in list(result)[: len(result) // 2]}
    return None


def garble(result: Any) -> Any:
    """Return a malformed result: text cut mid-way and ended with a broken JSON opening; other values as such text."""
    if isinstance(result, bytes):
        return result[: len(result) // 2] + GARBLE_MARK.encode() + b'{"'
    text = result if isinstance(result, str) else json.dumps(result, default=str)
    return text[: len(text) // 2] + GARBLE_MARK + '{"'


def mcp_result(result: Mapping[str, Any], fault: Fault | None) -> dict[str, Any]:
    """Apply `partial` or `malformed` to an MCP tools/call result: every text item, and any structured content."""
    change = truncate if fault == "partial" else garble if fault == "malformed" else None
    found = dict(result)
    if change is None:
        return found
    found["content"] = [{**item, "text": change(item["text"])} if item.get("type") == "text"
                        and isinstance(item.get("text"), str) else item for item in result.get("content", [])]
    if "structuredContent" in found:
        found.pop("structuredContent")  # a client validating it against the output schema must see it missing
    return found


def mcp_error(tool: str, fault: Fault) -> dict[str, Any]:
    """Return the MCP tools/call result an agent gets for an injected `error` or `timeout` (isError)."""
    text = (f"{tool} failed: the tool returned an error" if fault == "error"
            else f"{tool} timed out: no answer arrived in time; the call may or may not have taken effect")
    return {"content": [{"type": "text", "text": text}], "isError": True}
