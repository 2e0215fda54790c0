"""What a twin pass does and does not prove: the policy's stated differences and computed ones.

Computed differences: caps and approval parity (twin runs get canary's caps and approvals),
failure rehearsal per tool class (`stages.twin.chaos`: a tool is covered by its own entry or its
class's), tools no scenario expects, fidelity, and the twin snapshot's age.
"""

from __future__ import annotations

from typing import Any

from gatekeeper.core.fidelity import Fidelity
from gatekeeper.core.policy import Caps, Policy
from gatekeeper.core.vocabulary import TOOL_CLASSES


def _caps(caps: Caps) -> str:
    return f"{caps.tool_calls_per_session} calls, ${caps.spend_per_session_micros / 1e6:.2f} per session"


def differences(policy: Policy, *, fidelity: Fidelity | None, snapshot_age_s: float | None
                ) -> list[dict[str, str]]:
    """Return the known differences between the twin and production, each {kind, text}."""
    out = [{"kind": "stated", "text": text} for text in policy.twin.differences]
    out += _parity(policy)
    out.append(_chaos(policy))
    expected = {tool for s in policy.twin.scenarios.values() for tool in s.expect}
    unexercised = sorted(tool for tool, cls in policy.tools.items() if cls != "read_only" and tool not in expected)
    if unexercised:
        out.append({"kind": "coverage", "text": f"no scenario expects {', '.join(unexercised)}: a twin pass says "
                                                "nothing about them"})
    out.append(_fidelity(policy, fidelity))
    age = "no twin snapshot reported" if snapshot_age_s is None else \
        f"the twin's data snapshot is {snapshot_age_s / 3600:.1f}h old"
    out.append({"kind": "snapshot", "text": f"{age} (max {policy.twin.gate.max_twin_age_s / 3600:g}h)"})
    return out


def _parity(policy: Policy) -> list[dict[str, str]]:
    canary, expansion = policy.canary, policy.expansion
    approvals = ", ".join(canary.approval_required) or "none"
    out = [{"kind": "parity", "text": f"twin runs get canary's caps ({_caps(canary.caps)}) and approvals "
                                      f"({approvals}), as canary will enforce them"}]
    if expansion.caps != canary.caps or expansion.approval_required != canary.approval_required:
        later = ", ".join(expansion.approval_required) or "none"
        out.append({"kind": "parity", "text": f"expansion's caps ({_caps(expansion.caps)}) and approvals ({later}) "
                                              "differ and are not rehearsed in the twin"})
    return out


def _chaos(policy: Policy) -> dict[str, str]:
    rehearsed = set(policy.twin.chaos)
    if not rehearsed:
        return {"kind": "chaos", "text": "no failures are rehearsed (stages.twin.chaos is not set): tool errors, "
                                         "timeouts and partial results are not tried in the twin"}
    parts = []
    for tool_class in TOOL_CLASSES:
        tools = [tool for tool, cls in policy.tools.items() if cls == tool_class]
        if tools:
            covered = sorted(t for t in tools if t in rehearsed or tool_class in rehearsed)
            parts.append(f"{tool_class} {len(covered)} of {len(tools)}" + (f" ({', '.join(covered)})" if covered
                                                                            else ""))
    return {"kind": "chaos", "text": "failures rehearsed per tool class: " + "; ".join(parts)}


def _fidelity(policy: Policy, fidelity: Fidelity | None) -> dict[str, str]:
    gate = policy.twin.gate
    wanted = f"min {gate.min_fidelity:.2f} over {gate.min_replays}" if gate.min_fidelity is not None \
        else "not required by the gate"
    if fidelity is None or fidelity.value is None:
        text = ("fidelity not measured: no stable-version twin replays of scenarios recorded from live stable "
                f"sessions ({wanted})")
    else:
        text = (f"fidelity {fidelity.value:.2f}: {fidelity.faithful} of {fidelity.replays} stable replays "
                f"reproduced production ({wanted}); diverging: {fidelity.diverging_text()}")
    return {"kind": "fidelity", "text": text}


def as_lines(found: list[dict[str, Any]]) -> list[str]:
    """Return the differences as plain lines."""
    return [f"{d['kind']}: {d['text']}" for d in found]
