"""Rehearsed failures in twin sessions: a decision's `chaos` applied to a tool call, as the server's contract says.

The server draws them (`stages.twin.chaos`, deterministic per session seed and call); the SDK applies them:
- `delay_ms`: wait this long before the call;
- `error`: do not call the tool; raise ToolError (the outcome is reported as an error);
- `timeout`: call the tool (its side effect happens), then raise ToolTimeout (reported as an error);
- `partial`: call the tool; return its result truncated (`truncate`); reported ok;
- `malformed`: call the tool; return its result garbled (`garble`); reported ok.
`truncate` and `garble` are the server's (gatekeeper/core/chaos.py), copied: the SDK installs alone.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

GARBLE_MARK = "\ufffd"


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


def damaged(result: Any, fault: str | None) -> Any:
    """Return the result the agent gets: truncated for `partial`, garbled for `malformed`, else as it is."""
    if fault == "partial":
        return truncate(result)
    if fault == "malformed":
        return garble(result)
    return result


def failure_message(tool: str, fault: str) -> str:
    """Return what the agent is told about an injected error or timeout (the words a real failure would have)."""
    if fault == "error":
        return f"{tool} failed: the tool returned an error"
    return f"{tool} timed out: no answer arrived in time; the call may or may not have taken effect"
