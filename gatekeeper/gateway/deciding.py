"""The gateway's one door into Gatekeeper: its own use cases, store and policy snapshot, in-process.

Every import of Gatekeeper internals by the gateway is in this module, so that a rename elsewhere
touches one file. The gateway is part of the deployment: it decides through the same use cases as
`POST /v1/decisions` and `/outcome`, on the same database, so caps, approvals, the kill switch and
the gates see MCP traffic exactly as they see SDK traffic. Everything here blocks (database); the
asyncio side calls it in worker threads.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from prometheus_client import CollectorRegistry
from pydantic import ValidationError

from gatekeeper import decisions, sessions
from gatekeeper.api.runtime_schemas import DecisionCreate, SessionCreate
from gatekeeper.config import Settings
from gatekeeper.core.budgets import to_dollars, to_micros
from gatekeeper.core.chaos import Fault, Injection, mcp_error, mcp_result
from gatekeeper.core.policy import Policy, parse_duration
from gatekeeper.errors import BadRequest, ConfigError, GatekeeperError, Unauthorized
from gatekeeper.exported_metrics import Metrics
from gatekeeper.services import Services
from gatekeeper.store.rollout_records import get_agent
from gatekeeper.store.session_records import get_approval, get_session
from gatekeeper.store.tokens import find_token

__all__ = ["ConfigError", "Decider", "Fault", "GatekeeperError", "Injection", "Opened", "Policy", "Ruling", "Settings",
           "mcp_error", "mcp_result", "parse_duration"]
TOKEN_CACHE_S = 5.0  # a revoked agent token is refused by new MCP sessions within this long
M = TypeVar("M", SessionCreate, DecisionCreate)
BINDING_CACHE_S = 2.0  # an agent bound to another policy is decided by it within this long


@dataclass(frozen=True)
class Opened:
    """A Gatekeeper session opened for one MCP session."""

    session_id: str
    agent: str
    version: str
    arm: str
    stage: str | None
    environment: str
    mirror_id: str | None
    mirror_version: str | None


@dataclass(frozen=True)
class Ruling:
    """The verdict on one tool call, as the gateway acts on it."""

    decision_id: str
    verdict: str
    reason: str
    message: str
    approval_id: str | None
    tool_class: str
    cost_micros: int
    labels: tuple[str, str, str, str]
    chaos: Injection | None = None  # an allowed call of a candidate's twin session: the failure to rehearse


class Decider:
    """Gatekeeper's use cases for the gateway: sessions, decisions, outcomes, tokens, tool classes."""

    def __init__(self, settings: Settings, *, registry: CollectorRegistry | None = None) -> None:
        self.svc = dataclasses.replace(Services.build(settings), metrics=Metrics(registry or CollectorRegistry()))
        self.hot = self.svc.hot
        self.metrics = self.svc.metrics
        self._tokens: dict[str, tuple[float, str | None]] = {}
        self._bindings: dict[str, tuple[float, str]] = {}

    # -- who is calling --------------------------------------------------------------------

    def cached_agent(self, token: str) -> tuple[bool, str | None]:
        """Return (known, agent) from the token cache without touching the database (safe on the event loop)."""
        hit = self._tokens.get(token)
        if hit is None or time.monotonic() - hit[0] >= TOKEN_CACHE_S:
            return False, None
        return True, hit[1]

    def agent_of(self, token: str) -> str:
        """Return the agent an agent token belongs to, or raise Unauthorized."""
        now = time.monotonic()
        hit = self._tokens.get(token)
        if hit is None or now - hit[0] >= TOKEN_CACHE_S:
            with self.svc.db.reading() as db:
                row = find_token(token, db=db)
                agent = row.agent if row is not None and row.role == "agent" else None
            if len(self._tokens) > 10_000:
                self._tokens.clear()
            hit = self._tokens[token] = (now, agent)
        if hit[1] is None:
            raise Unauthorized("unknown or revoked agent token")
        return hit[1]

    # -- sessions --------------------------------------------------------------------------

    def open(self, agent: str, *, session_key: str | None, environment: str, seed: str | None = None,
             scenario: str | None = None, arm: str | None = None, snapshot_at: str | None = None) -> Opened:
        """Start a Gatekeeper session for a new MCP session (arm, stage and caps as in SPEC §3; a twin run's
        seed, scenario, arm and snapshot time, checked as `POST /v1/sessions` checks them)."""
        asked = _validated(SessionCreate, agent=agent, session_key=session_key, environment=environment, seed=seed,
                           scenario=scenario, arm=arm, twin_snapshot_at=snapshot_at)
        snapshot = asked.twin_snapshot_at.timestamp() if asked.twin_snapshot_at else None
        started = sessions.start_session(self.svc, agent, session_key=session_key, environment=environment,
                                         scenario=scenario, twin_snapshot_at=snapshot, now=self.svc.clock(),
                                         seed=seed, arm=asked.arm)
        for row in filter(None, (started.session, started.mirror)):
            self.metrics.sessions.labels(agent, row.version, row.arm).inc()
        row, mirror = started.session, started.mirror
        return Opened(row.id, agent, row.version, row.arm, row.stage, row.environment,
                      mirror.id if mirror else None, mirror.version if mirror else None)

    def mirror(self, agent: str, mirror_id: str, version: str) -> Opened:
        """Return the mirror session a candidate's MCP session joins, as an Opened."""
        with self.svc.db.reading() as db:
            row = get_session(mirror_id, db=db)
            return Opened(row.id, agent, row.version, row.arm, row.stage, row.environment, None, None)

    def close(self, session_id: str, agent: str, *, status: str = "ok") -> None:
        """End a Gatekeeper session when its MCP session closes; an ended one stays as it was."""
        with contextlib.suppress(GatekeeperError):  # already ended (by the agent through the API, say)
            sessions.end_session(self.svc, session_id, scope=agent, status=status, passed=None, now=self.svc.clock())

    # -- calls -----------------------------------------------------------------------------

    def decide(self, opened: Opened, tool: str, arguments: Mapping[str, Any] | None, *,
               approval_id: str | None = None, preview: str | None = None) -> Ruling:
        """Decide one tool call with its arguments and the policy's cost; count the verdict."""
        policy = self.policy(opened.agent)
        cost = self.cost_micros(policy, tool)
        # The HTTP API's own bounds (tool name, 16 KiB of arguments, no NUL) hold for MCP calls too.
        _validated(DecisionCreate, session_id=opened.session_id, tool=tool, cost=to_dollars(cost),
                   arguments=dict(arguments or {}))
        ask = decisions.Ask(opened.session_id, tool, cost, preview, approval_id, dict(arguments or {}), None)
        done = decisions.decide(self.svc, ask, scope=opened.agent, now=self.svc.clock())
        verdict = done.verdict
        if not done.replayed:
            self.metrics.count_decision(*done.labels, verdict.verdict, verdict.reason)
        return Ruling(done.decision_id, verdict.verdict, verdict.reason, done.message, done.approval_id,
                      policy.tool_class(tool), cost, tuple(done.labels), done.chaos)  # type: ignore[arg-type]

    def report(self, ruling: Ruling, agent: str, *, status: str, latency_ms: float,
               actual_cost: float | None) -> bool:
        """Report an allowed call's outcome as the agent would; return whether it tripped the kill switch."""
        actual = None if actual_cost is None else to_micros(actual_cost)
        done = decisions.report_outcome(self.svc, ruling.decision_id, scope=agent, status=status,
                                        actual_micros=actual, latency_ms=latency_ms, now=self.svc.clock())
        if done.first:
            agent_, version, arm, _ = done.labels
            self.metrics.tool_calls.labels(agent_, version, arm, ruling.tool_class, status).inc()
            self.metrics.spend.labels(agent_, version, arm).inc(to_dollars(done.decision.actual_cost_micros or 0))
            self.metrics.tool_latency.labels(agent_, version, arm).observe(latency_ms / 1000)
            if done.decision.overrun_micros:
                self.metrics.overruns.labels(agent_, version, arm).inc()
        return done.kill_switch_tripped

    # -- policy facts ----------------------------------------------------------------------

    def policy(self, agent: str) -> Policy:
        """Return the policy the agent is bound to, from the process's policy snapshot."""
        now = time.monotonic()
        hit = self._bindings.get(agent)
        if hit is None or now - hit[0] >= BINDING_CACHE_S:
            with self.svc.db.reading() as db:
                hit = self._bindings[agent] = (now, get_agent(agent, db=db).policy)
        return self.svc.policies.get(hit[1]).policy

    @staticmethod
    def cost_micros(policy: Policy, tool: str) -> int:
        """Return the policy's cost estimate per call of a tool (0 when it names none)."""
        return policy.tool_cost(tool) or 0

    def never_allowed(self, policy: Policy, opened: Opened, tool: str) -> str | None:
        """Return why this session's stage can never allow the tool, or None when it may."""
        tool_class = policy.tool_class(tool)
        if opened.arm == "candidate" and opened.mirror_id is None and opened.stage == "shadow" \
                and tool_class not in policy.shadow.execute:
            return f"shadowed in this stage: {tool_class} calls are recorded, never executed"
        return None

    def needs_approval(self, policy: Policy, opened: Opened, tool: str) -> bool:
        """Return whether a call of the tool in this session waits for a person (twin sessions as canary)."""
        stage = "canary" if opened.environment == "twin" else opened.stage
        if opened.arm != "candidate" or stage not in ("canary", "expansion"):
            return False
        tier_stage = policy.canary if stage == "canary" else policy.expansion
        return policy.tool_class(tool) in tier_stage.approval_required

    def approval_state(self, approval_id: str) -> str:
        """Return an approval's state: pending, approved, rejected, expired or cancelled."""
        with self.svc.db.reading() as db:
            return get_approval(approval_id, db=db).state

    @property
    def threads(self) -> int:
        """Return how many threads should run decisions and outcomes: one on SQLite (serialized), more on Postgres."""
        return 8 if self.hot.postgres else 1

    def dispose(self) -> None:
        """Close the database connections."""
        self.hot.close()
        self.svc.db.dispose()


def _validated(model: type[M], **values: Any) -> M:
    """Check values against the HTTP API's input model; BadRequest names the first field at fault."""
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise BadRequest(f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}",
                         field=str(first["loc"][0]) if first["loc"] else None) from None
