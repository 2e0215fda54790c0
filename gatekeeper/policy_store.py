"""The in-memory policy snapshot every decision is answered from, reloaded when files change.

Each process looks at the policy folder at most every `reload_s` seconds (a stat of each
file). A changed file is parsed; if it has problems, the previous good revision of that
policy stays in force and the problems are kept for `gatekeeper policy check` and the logs,
so a typo never takes an agent's policy away.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from gatekeeper.core.policy import Policy
from gatekeeper.errors import NotFound
from gatekeeper.policy_files import parse_policy, policy_revision
from gatekeeper.policy_problems import PolicyError, PolicyProblem
from gatekeeper.scenario_files import is_scenario_file

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadedPolicy:
    """A parsed policy with the revision (content hash), file and text it came from."""

    policy: Policy
    revision: str
    path: str
    text: str


@dataclass(frozen=True)
class PolicySnapshot:
    """Every loaded policy by name and by bound agent, and the problems of the last load."""

    by_name: Mapping[str, LoadedPolicy] = field(default_factory=dict)
    problems: tuple[PolicyProblem, ...] = ()


class PolicyStore:
    """Load a folder of policies and keep an immutable snapshot current."""

    def __init__(self, folder: Path, *, reload_s: float = 2.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.folder = Path(folder)
        self.reload_s = reload_s
        self._clock = clock
        self._lock = threading.Lock()
        self._signature: tuple[tuple[str, int, int], ...] = ()
        self._checked_at = float("-inf")
        self._snapshot = PolicySnapshot()
        self.reload()

    def snapshot(self) -> PolicySnapshot:
        """Return the current snapshot, re-reading the folder when it is due and changed."""
        if self._clock() - self._checked_at >= self.reload_s:
            self.reload()
        return self._snapshot

    def get(self, name: str) -> LoadedPolicy:
        """Return the policy called `name`, or raise NotFound."""
        loaded = self.snapshot().by_name.get(name)
        if loaded is None:
            raise NotFound(f"no policy named {name!r} in {self.folder}", field="policy")
        return loaded

    def reload(self) -> PolicySnapshot:
        """Re-read the folder if any file changed; return the snapshot."""
        with self._lock:
            self._checked_at = self._clock()
            signature = self._current_signature()
            if signature != self._signature:
                self._snapshot = self._load(self._snapshot)
                self._signature = signature
            return self._snapshot

    def _current_signature(self) -> tuple[tuple[str, int, int], ...]:
        files = sorted(self.folder.glob("*.y*ml"))
        return tuple((str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in files)

    def _load(self, previous: PolicySnapshot) -> PolicySnapshot:
        by_name: dict[str, LoadedPolicy] = {}
        problems: list[PolicyProblem] = []
        for path in sorted(self.folder.glob("*.y*ml")):
            if is_scenario_file(path):
                continue  # read with the policy that names it
            text = path.read_text(encoding="utf-8")
            try:
                policy = parse_policy(text, file=str(path))
            except PolicyError as exc:
                problems.extend(exc.problems)
                for problem in exc.problems:
                    log.error("policy problem, previous revision stays in force: %s", problem)
                continue
            by_name[policy.name] = LoadedPolicy(policy, policy_revision(text), str(path), text)
        for name, loaded in previous.by_name.items():
            # A file that now fails keeps its last good revision in force.
            if name not in by_name and any(p.file == loaded.path for p in problems):
                by_name[name] = loaded
        return PolicySnapshot(MappingProxyType(by_name), tuple(problems))
