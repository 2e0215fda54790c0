"""What a server warns people about, on every dashboard page, in `/readyz` and in `gatekeeper status`.

- scheduler: no scheduler has ticked within three intervals, so no gate is evaluated.
- policy: a policy file failed to (re)load; its last good revision, if any, stays in force.

Neither makes the server unready: decisions are still answered from the policies in force.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from gatekeeper.policy_problems import PolicyProblem
from gatekeeper.policy_store import PolicySnapshot
from gatekeeper.scheduler_status import SchedulerHealth, read_health
from gatekeeper.services import Services

FIRST_PROBLEMS = 3


@dataclass(frozen=True)
class ServerWarning:
    """One thing a person should know and act on."""

    kind: Literal["scheduler", "policy"]
    title: str
    text: str
    problems: tuple[str, ...] = ()

    @property
    def line(self) -> str:
        """Return the warning as one line (`/readyz`, the CLI)."""
        return f"{self.title}: {self.text}" + (f" ({'; '.join(self.problems)})" if self.problems else "")


def current_warnings(svc: Services, *, now: float) -> list[ServerWarning]:
    """Return the scheduler's and the policies' warnings now."""
    health = read_health(svc.db, now=now)
    found = [scheduler_warning(health)] if health is not None and not health.healthy else []
    return found + policy_warnings(svc.policies.snapshot())


def scheduler_warning(health: SchedulerHealth) -> ServerWarning:
    """Return the warning of a missing scheduler."""
    return ServerWarning("scheduler", f"No scheduler has ticked within {health.limit_s:g}s", health.problem)


def policy_warnings(snapshot: PolicySnapshot) -> list[ServerWarning]:
    """Return one warning per policy file whose last load failed, naming its first problems."""
    by_file: dict[str, list[PolicyProblem]] = defaultdict(list)
    for problem in snapshot.problems:
        by_file[problem.file].append(problem)
    in_force = {loaded.path: loaded for loaded in snapshot.by_name.values()}
    found = []
    for file, problems in sorted(by_file.items()):
        kept = in_force.get(file)
        consequence = (f"the last good revision {kept.revision} of policy {kept.policy.name} stays in force"
                       if kept else "no revision of it is loaded, so agents bound to it cannot be served")
        shown = [f"{p.path}: {p.message}" if p.path else p.message for p in problems[:FIRST_PROBLEMS]]
        if len(problems) > FIRST_PROBLEMS:
            shown.append(f"and {len(problems) - FIRST_PROBLEMS} more (gatekeeper policy check {Path(file).name})")
        found.append(ServerWarning("policy", f"Policy file {Path(file).name} failed to load", consequence,
                                   tuple(shown)))
    return found
