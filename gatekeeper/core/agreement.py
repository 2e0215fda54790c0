"""Agreement of a shadow candidate with the stable version it mirrors.

A mirrored pair is one live session served by stable and the candidate session that shadowed
it. The pair agrees when both asked for the same side-effecting calls (every class but
`read_only`) in the same order: reads are how an agent looks around and may differ freely,
but what it would change in the world must match what stable did.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

Call = tuple[str, str]  # (tool, tool class), in the order the calls were asked


@dataclass(frozen=True)
class MirroredPair:
    """The calls of a stable session and of the candidate session that mirrored it."""

    stable: Sequence[Call]
    candidate: Sequence[Call]


def side_effects(calls: Iterable[Call]) -> tuple[str, ...]:
    """Return the tools of the side-effecting calls, in order."""
    return tuple(tool for tool, tool_class in calls if tool_class != "read_only")


def pair_agrees(pair: MirroredPair) -> bool:
    """Return whether both sessions asked for the same side-effecting calls in the same order."""
    return side_effects(pair.stable) == side_effects(pair.candidate)


def agreement(pairs: Iterable[MirroredPair]) -> tuple[int, int]:
    """Return (agreeing pairs, all pairs)."""
    verdicts = [pair_agrees(pair) for pair in pairs]
    return sum(verdicts), len(verdicts)
