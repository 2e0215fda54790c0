"""Trajectory assertions of twin scenarios: did the agent call the tools it should, in order?

`expect` lists tools that must appear in this order, other calls may interleave;
`forbid` lists tools that must not be called at all. The harness's own `passed` flag,
when given, must also be true. `handling_problems` judges how a run handled failed calls
(retries, blind retries of irreversible tools, a clean end).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
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


# -- graceful handling of failures (stages.twin.chaos rehearses them) ---------------------------


@dataclass(frozen=True)
class Step:
    """One call of a run as graceful handling judges it (a decision, in the order asked)."""

    tool: str
    tool_class: str
    verdict: str
    failed: bool  # its outcome was an error: an injected error or timeout included


def handling_problems(steps: Sequence[Step], *, max_retries: Mapping[str, int], no_blind_retry: bool,
                      ends_cleanly: bool, status: str) -> list[str]:
    """Judge how a run handled failures; each problem starts with the assertion it breaks.

    - `max_retries`: a tool's calls made while its last call failed (other tools may interleave; a call that
      succeeds resets the count; a call waiting for a person is not a retry) stay within the tool's limit;
    - `no_blind_retry`: an irreversible tool is not called again as the very next call after it failed;
    - `ends_cleanly`: the agent ended the run itself (`ok` or `error`, not `abandoned`).
    """
    problems = [f"max_retries: {tool} was retried {count} times after failing (at most {max_retries[tool]})"
                for tool, count in _most_retries(steps).items() if tool in max_retries and count > max_retries[tool]]
    if no_blind_retry:
        problems += [f"no_blind_retry: {step.tool} (irreversible) was called again straight after it failed "
                     f"(call {i + 2})" for i, (step, after) in enumerate(zip(steps, steps[1:], strict=False))
                     if step.failed and step.tool_class == "irreversible" and after.tool == step.tool]
    if ends_cleanly and status == "abandoned":
        problems.append("ends_cleanly: the run was abandoned, not ended by the agent")
    return problems


def _most_retries(steps: Sequence[Step]) -> dict[str, int]:
    """Return, per tool, the longest run of calls made while its previous call had failed."""
    failing: dict[str, int] = {}  # tool -> retries since it last failed (absent: its last call did not fail)
    most: dict[str, int] = {}
    for step in steps:
        if step.verdict == "approval_required":
            continue
        if step.tool in failing:
            failing[step.tool] += 1
            most[step.tool] = max(most.get(step.tool, 0), failing[step.tool])
        if step.failed:
            failing.setdefault(step.tool, 0)
        elif step.verdict == "allow":
            failing.pop(step.tool, None)
    return most
