"""Trajectory assertions of twin scenarios: did the agent call the tools it should, in order?

`expect` lists tools that must appear in this order, other calls may interleave;
`forbid` lists tools that must not be called at all. A step of `expect` may also name the
arguments that matter (`arguments[i]`, field -> value): the call matched to that step must carry
them. The harness's own `passed` flag, when given, must also be true.

A scenario recorded from a live session can also be *replayed*: a twin run reproduces the recording
when its side-effecting calls are exactly the recorded steps, tool and arguments, in order;
`replay` says whether it does and at which step it first diverges.
`handling_problems` judges how a run handled failed calls (retries, blind retries of irreversible
tools, a clean end).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

NO_ARGUMENTS: Mapping[str, Any] = {}


@dataclass(frozen=True)
class Call:
    """One tool call of a run: the tool, its class and its (redacted) arguments."""

    tool: str
    tool_class: str = "irreversible"
    arguments: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class TrajectoryVerdict:
    """Whether a scenario run passed, and why not."""

    passed: bool
    problems: tuple[str, ...]


@dataclass(frozen=True)
class ReplayVerdict:
    """Whether a twin run reproduced a recorded trajectory, and the first step where it did not (0-based)."""

    faithful: bool
    divergence: int | None = None
    detail: str = ""


def judge(calls: Sequence[str | Call], *, expect: Sequence[str], forbid: Sequence[str],
          harness_passed: bool | None = None,
          arguments: Sequence[Mapping[str, Any]] = ()) -> TrajectoryVerdict:
    """Judge a run's tool calls (in the order asked) against a scenario's assertions."""
    runs = [call if isinstance(call, Call) else Call(call) for call in calls]
    problems = []
    missing = _first_missing(runs, expect, arguments)
    if missing is not None:
        problems.append(f"expected {missing} in order {list(expect)}")
    called = {call.tool for call in runs}
    problems += [f"called forbidden tool {tool}" for tool in forbid if tool in called]
    if harness_passed is False:
        problems.append("the harness reported failure")
    return TrajectoryVerdict(not problems, tuple(problems))


def carries(call: Call, wanted: Mapping[str, Any]) -> bool:
    """Return whether the call's arguments hold every wanted field with the wanted value."""
    given = call.arguments or NO_ARGUMENTS
    return all(field in given and given[field] == value for field, value in wanted.items())


def _first_missing(calls: Sequence[Call], expect: Sequence[str],
                   arguments: Sequence[Mapping[str, Any]]) -> str | None:
    remaining = iter(calls)
    for i, tool in enumerate(expect):
        wanted = arguments[i] if i < len(arguments) else NO_ARGUMENTS
        if not any(call.tool == tool and carries(call, wanted) for call in remaining):
            return f"{tool} with {dict(wanted)}" if wanted else tool
    return None


def side_effects(calls: Sequence[Call]) -> list[Call]:
    """Return the calls that change something (every class but read_only), in order."""
    return [call for call in calls if call.tool_class != "read_only"]


def replay(calls: Sequence[Call], *, expect: Sequence[str],
           arguments: Sequence[Mapping[str, Any]] = ()) -> ReplayVerdict:
    """Judge whether a run's side-effecting calls reproduce the recorded steps exactly, in order."""
    done = side_effects(calls)
    for i, tool in enumerate(expect):
        wanted = arguments[i] if i < len(arguments) else NO_ARGUMENTS
        if i >= len(done):
            return ReplayVerdict(False, i, f"step {i + 1}: expected {tool}, the run stopped")
        if done[i].tool != tool:
            return ReplayVerdict(False, i, f"step {i + 1}: expected {tool}, got {done[i].tool}")
        if not carries(done[i], wanted):
            got = {field: (done[i].arguments or NO_ARGUMENTS).get(field) for field in wanted}
            return ReplayVerdict(False, i, f"step {i + 1}: {tool} expected {dict(wanted)}, got {got}")
    if len(done) > len(expect):
        extra = done[len(expect)]
        return ReplayVerdict(False, len(expect), f"step {len(expect) + 1}: unexpected {extra.tool}")
    return ReplayVerdict(True)


def draft(calls: Sequence[Call], *, keep: Sequence[str] | None = None, redacted: str = "[redacted]"
          ) -> tuple[list[str], list[dict[str, Any]]]:
    """Return a recorded run's side-effecting steps and, per step, the scalar arguments that matter.

    `keep` names the fields that matter as `tool.field` (None: every scalar field of every step); a
    field masked by `approvals.redact` is never kept, since its value is not known.
    """
    steps, arguments = [], []
    for call in side_effects(calls):
        given = call.arguments or NO_ARGUMENTS
        chosen = {field: value for field, value in given.items()
                  if isinstance(value, (str, int, float, bool)) and value != redacted
                  and (keep is None or f"{call.tool}.{field}" in keep)}
        steps.append(call.tool)
        arguments.append(chosen)
    return steps, arguments


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
