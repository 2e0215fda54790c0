"""The twin's fidelity: does the stable version, run in the twin, do what it did in production?

A scenario recorded from a live stable session is *replayed* when the stable version runs it in
the twin. The replay is faithful when its side-effecting calls reproduce the recording exactly
(core/trajectory.py `replay`); fidelity is the share of faithful replays. A twin that drifted from
production shows up here before it lets a candidate pass on false confidence.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

DAY_S = 86_400.0
TWIN_UNFAITHFUL = "twin_unfaithful"
# The gate reason's plain message; {fidelity} {threshold} {faithful} {replays} {diverging} are filled in.
UNFAITHFUL_MESSAGE = ("twin_unfaithful: the stable version reproduced its recorded production trajectory in "
                      "only {faithful} of {replays} twin replays (fidelity {fidelity:.2f} < {threshold:.2f}), "
                      "so the twin no longer behaves like production; diverging: {diverging}")


@dataclass(frozen=True)
class Replay:
    """One stable-version twin run of a recorded scenario, judged against the recording."""

    scenario: str
    session_id: str
    at: float
    faithful: bool
    divergence: int | None = None  # the first divergent step, 0-based
    detail: str = ""


@dataclass(frozen=True)
class Fidelity:
    """The share of faithful replays, and where the newest divergent replay of each scenario diverged."""

    replays: int
    faithful: int
    diverging: tuple[tuple[str, str], ...] = ()  # (scenario, detail), newest first

    @property
    def value(self) -> float | None:
        return self.faithful / self.replays if self.replays else None

    def diverging_text(self) -> str:
        """Return the diverging scenarios and where, for a person."""
        return "; ".join(f"{name} ({detail})" for name, detail in self.diverging) or "none"


def summarize(replays: Sequence[Replay]) -> Fidelity:
    """Return the fidelity of these replays."""
    diverging: dict[str, str] = {}
    for run in sorted(replays, key=lambda r: r.at, reverse=True):
        if not run.faithful:
            diverging.setdefault(run.scenario, run.detail)
    return Fidelity(len(replays), sum(r.faithful for r in replays), tuple(diverging.items()))


def by_day(replays: Sequence[Replay]) -> list[tuple[float, Fidelity]]:
    """Return fidelity per UTC day (the day's start), oldest first."""
    days: dict[float, list[Replay]] = {}
    for run in replays:
        days.setdefault(run.at - run.at % DAY_S, []).append(run)
    return [(day, summarize(runs)) for day, runs in sorted(days.items())]


def unfaithful_reason(fidelity: Fidelity, *, threshold: float) -> str:
    """Return the twin gate's `twin_unfaithful` reason in plain words."""
    return UNFAITHFUL_MESSAGE.format(faithful=fidelity.faithful, replays=fidelity.replays,
                                     fidelity=fidelity.value or 0.0, threshold=threshold,
                                     diverging=fidelity.diverging_text())
