"""Sequence rules: conditions on a session's own call history, enforced at every stage.

`{before: a, then: b}` denies b until a ran in the session; `{max_calls: {t: n}}` denies
the (n+1)th call of t. A call "ran" when it was allowed (or, in shadow, would have been).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from gatekeeper.core.policy import BeforeRule, MaxCallsRule, SequenceRule


def relevant_tools(rules: Sequence[SequenceRule], tool: str) -> frozenset[str]:
    """Return the tools whose past calls decide whether `tool` may run (empty: no rule applies)."""
    found: set[str] = set()
    for rule in rules:
        if isinstance(rule, BeforeRule) and rule.then == tool:
            found.add(rule.before)
        elif isinstance(rule, MaxCallsRule) and tool in rule.limits:
            found.add(tool)
    return frozenset(found)


def sequence_reason(rules: Sequence[SequenceRule], tool: str, ran: Mapping[str, int]) -> str:
    """Return the reason code of the first rule that forbids `tool` now, or ''."""
    for rule in rules:
        if isinstance(rule, BeforeRule) and rule.then == tool and ran.get(rule.before, 0) == 0:
            return "sequence_before"
        if isinstance(rule, MaxCallsRule) and tool in rule.limits and ran.get(tool, 0) >= rule.limits[tool]:
            return "sequence_max_calls"
    return ""
