"""Trajectory assertions of twin scenarios: did the agent call the tools it should, in order?

`expect` lists tools that must appear in this order, other calls may interleave;
`forbid` lists tools that must not be called at all. The harness's own `passed` flag,
when given, must also be true.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class TrajectoryVerdict:
    """Whether a scenario run passed, and why not."""

    passed: bool
    problems: tuple[str, ...]


def judge(calls: Sequence[str], *, expect: Sequence[str], forbid: Sequence[str],
          harness_passed: bool | None = None) -> TrajectoryVerdict:
    """Judge a run's tool calls (in the order asked) against a scenario's assertions."""
    problems = []
    missing = _first_missing(calls, expect)
    if missing is not None:
        problems.append(f"expected {missing} in order {list(expect)}")
    called = set(calls)
    problems += [f"called forbidden tool {tool}" for tool in forbid if tool in called]
    if harness_passed is False:
        problems.append("the harness reported failure")
    return TrajectoryVerdict(not problems, tuple(problems))


def _first_missing(calls: Sequence[str], expect: Sequence[str]) -> str | None:
    remaining = iter(calls)
    for tool in expect:
        if not any(call == tool for call in remaining):
            return tool
    return None
