"""The tables. Table objects are never the API contract: the API has its own models.

Every timestamp is a float of seconds since the epoch (UTC) and every amount of money is an
integer of micro-dollars, so SQLite and Postgres compare them the same way and sums stay exact.
A change here needs a migration: `gatekeeper db revision -m "what changed"` (see store/schema.py).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import BigInteger, Column, Index, Integer, Text, UniqueConstraint, text
from sqlmodel import Field, SQLModel

# Micro-dollars outgrow 32 bits at $2,147: money is a BIGINT on Postgres. SQLite's INTEGER is 64-bit already.
MICROS = BigInteger().with_variant(Integer(), "sqlite")


def micros(*, default: Any = ..., nullable: bool = False) -> Any:
    """Return a field of micro-dollars, 64-bit on every database (required unless given a default)."""
    if nullable and default is ...:
        default = None
    return Field(default=default, sa_column=Column(MICROS, nullable=nullable))


class Agent(SQLModel, table=True):
    __tablename__ = "agents"
    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=63, unique=True, index=True)
    policy: str = Field(max_length=200)
    stable_version: str | None = Field(default=None, max_length=100)
    rollout_id: int | None = Field(default=None)  # the active rollout, if any
    created_at: float


class Version(SQLModel, table=True):
    __tablename__ = "versions"
    __table_args__ = (UniqueConstraint("agent_id", "label"),)
    id: int | None = Field(default=None, primary_key=True)
    agent_id: int = Field(foreign_key="agents.id", index=True)
    label: str = Field(max_length=100)
    created_at: float


class Rollout(SQLModel, table=True):
    __tablename__ = "rollouts"
    id: int | None = Field(default=None, primary_key=True)
    agent_id: int = Field(foreign_key="agents.id", index=True)
    candidate_version: str = Field(max_length=100)
    stable_version: str | None = Field(default=None, max_length=100)
    stage: str = Field(max_length=20)
    tier: int = 0
    state: str = Field(max_length=20)
    state_reason: str = Field(default="", max_length=500)
    held_by: str | None = Field(default=None, max_length=10)  # while held: gate | outage | alert (HoldOwner)
    held_by_alert: str | None = Field(default=None, max_length=100)  # the fingerprint of the alert holding it
    tier_started_at: float
    started_at: float
    updated_at: float
    ended_at: float | None = None
    policy_revision: str = Field(max_length=40)
    kill_switch_open: bool = False
    consecutive_failures: int = 0  # failed gate evaluations in a row at this tier
    consecutive_errors: int = 0  # metrics errors in a row at this tier


class Transition(SQLModel, table=True):
    """One entry of the audit trail: who moved which rollout where, why, on which numbers."""

    __tablename__ = "transitions"
    __table_args__ = (Index("ix_transitions_agent_at", "agent_id", "at"),)  # history pages, newest first
    id: int | None = Field(default=None, primary_key=True)
    rollout_id: int = Field(foreign_key="rollouts.id", index=True)
    agent_id: int = Field(foreign_key="agents.id")
    at: float
    actor: str = Field(max_length=200)
    action: str = Field(max_length=30)
    reason: str = Field(default="", max_length=1000)
    from_stage: str | None = Field(default=None, max_length=20)
    from_tier: int | None = None
    from_state: str | None = Field(default=None, max_length=20)
    to_stage: str = Field(max_length=20)
    to_tier: int
    to_state: str = Field(max_length=20)
    traffic_percent: float = 0.0
    policy_revision: str = Field(max_length=40)
    metrics: str = Field(default="{}", sa_column=Column(Text, nullable=False, default="{}"))


class GateEvaluation(SQLModel, table=True):
    """One gate evaluation of a rollout; unique per rollout and evaluation window."""

    __tablename__ = "gate_evaluations"
    # Indexes in the orders read: a rollout's newest evaluation and its charts; an agent's history
    # pages and retention's pruning, both by time.
    __table_args__ = (UniqueConstraint("rollout_id", "window_key"),
                      Index("ix_gate_evaluations_rollout_at", "rollout_id", "at"),
                      Index("ix_gate_evaluations_agent_at", "agent_id", "at"))
    id: int | None = Field(default=None, primary_key=True)
    rollout_id: int = Field(foreign_key="rollouts.id")
    agent_id: int = Field(foreign_key="agents.id")
    at: float
    stage: str = Field(max_length=20)
    tier: int
    window_key: str = Field(max_length=100)
    result: str = Field(max_length=20)  # promote | hold | rollback | error
    report: str = Field(default="{}", sa_column=Column(Text, nullable=False, default="{}"))
    policy_revision: str = Field(max_length=40)


class PolicyRevision(SQLModel, table=True):
    """The text of every policy revision that governed something, so history can show it."""

    __tablename__ = "policy_revisions"
    revision: str = Field(primary_key=True, max_length=40)
    name: str = Field(max_length=200, index=True)
    path: str = Field(max_length=1000)
    text: str = Field(sa_column=Column(Text, nullable=False))
    first_seen_at: float


class ApiToken(SQLModel, table=True):
    __tablename__ = "tokens"
    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=200)
    token_hash: str = Field(max_length=64, unique=True, index=True)
    role: str = Field(max_length=20)
    agent: str | None = Field(default=None, max_length=63)  # scope of an `agent` token
    created_at: float
    revoked_at: float | None = None


class User(SQLModel, table=True):
    __tablename__ = "users"
    id: int | None = Field(default=None, primary_key=True)
    username: str = Field(max_length=100, unique=True, index=True)
    password_hash: str = Field(max_length=300)
    role: str = Field(max_length=20)
    created_at: float


class AgentSession(SQLModel, table=True):
    """One task or conversation of an agent, with its counters and caps fixed at start."""

    __tablename__ = "sessions"
    # By time within an agent (retention) and within a rollout (gate windows, charts). Only mirrors are
    # indexed by `mirror_of`: an index of mostly NULLs misled the planner into walking every session.
    # Twin runs have their own by time within the agent (the session listing's twin filter); live
    # sessions, the many, are not in it.
    __table_args__ = (Index("ix_sessions_agent_started", "agent_id", "started_at"),
                      Index("ix_sessions_rollout_started", "rollout_id", "started_at"),
                      Index("ix_sessions_mirror_of", "mirror_of", sqlite_where=text("mirror_of IS NOT NULL"),
                            postgresql_where=text("mirror_of IS NOT NULL")),
                      Index("ix_sessions_agent_twin_started", "agent_id", "started_at",
                            sqlite_where=text("environment = 'twin'"), postgresql_where=text("environment = 'twin'")))
    id: str = Field(primary_key=True, max_length=40)
    agent_id: int = Field(foreign_key="agents.id")
    rollout_id: int | None = Field(default=None)
    version: str = Field(max_length=100)
    arm: str = Field(max_length=20)  # candidate | stable
    stage: str | None = Field(default=None, max_length=20)
    environment: str = Field(max_length=10)  # live | twin
    session_key: str = Field(max_length=200)
    scenario: str | None = Field(default=None, max_length=200)
    mirror_of: str | None = Field(default=None, max_length=40)
    cap_tool_calls: int
    cap_spend_micros: int = micros()
    tool_calls: int = 0
    spend_micros: int = micros(default=0)  # reserved and settled spend
    status: str = Field(default="open", max_length=20)  # open | ok | error | abandoned
    passed: bool | None = None
    twin_snapshot_at: float | None = None
    seed: str | None = Field(default=None, max_length=100)  # chaos seed of a twin session (core/chaos.py)
    started_at: float
    ended_at: float | None = None


class Decision(SQLModel, table=True):
    """One verdict on one tool call, and later its outcome."""

    __tablename__ = "decisions"
    # Only reported decisions are indexed for the kill switch and gates: an insert writes one page fewer.
    # A request id is unique within its session: the arbiter of concurrent retries (SPEC §5). Decisions
    # without one are not in that index, so they cost nothing more to insert.
    __table_args__ = (Index("ix_decisions_rollout_arm_outcome", "rollout_id", "arm", "outcome_at",
                            sqlite_where=text("outcome_at IS NOT NULL"),
                            postgresql_where=text("outcome_at IS NOT NULL")),
                      Index("ux_decisions_session_request", "session_id", "request_id", unique=True,
                            sqlite_where=text("request_id IS NOT NULL"),
                            postgresql_where=text("request_id IS NOT NULL")))
    id: str = Field(primary_key=True, max_length=40)
    session_id: str = Field(foreign_key="sessions.id", index=True)
    agent_id: int = Field(foreign_key="agents.id")
    rollout_id: int | None = None
    version: str = Field(max_length=100)
    arm: str = Field(max_length=20)
    stage: str | None = Field(default=None, max_length=20)
    tool: str = Field(max_length=200)
    tool_class: str = Field(max_length=20)
    cost_micros: int = micros()
    verdict: str = Field(max_length=30)
    reason: str = Field(default="", max_length=60)
    would_verdict: str | None = Field(default=None, max_length=30)  # for shadowed calls
    would_reason: str | None = Field(default=None, max_length=60)
    approval_id: str | None = Field(default=None, max_length=40)
    preview: str | None = Field(default=None, max_length=2000)
    # The call's arguments as approvers and traces see them (policy `approvals.redact` fields masked),
    # and the SHA-256 of the unredacted canonical JSON, which binds an approval to exactly this call.
    arguments: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    arguments_digest: str | None = Field(default=None, max_length=64)
    request_id: str | None = Field(default=None, max_length=100)  # the caller's retry key (SPEC §5)
    # The budget left as the answer said it, so that a retry with the same request id gets the same answer.
    remaining_tool_calls: int | None = None
    remaining_spend_micros: int | None = micros(nullable=True)
    at: float
    outcome_status: str | None = Field(default=None, max_length=10)
    actual_cost_micros: int | None = micros(nullable=True)
    latency_ms: float | None = None
    outcome_at: float | None = None
    overrun_micros: int | None = micros(nullable=True)  # actual cost above the reservation (SPEC §2), if any


class KillSwitchCount(SQLModel, table=True):
    """One time bucket of a rollout's live candidate outcomes, in a ring of 64 slots (store/outcome_statements.py)."""

    __tablename__ = "kill_switch_counts"
    rollout_id: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    slot: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    bucket_start: int = Field(sa_column=Column(BigInteger().with_variant(Integer(), "sqlite"), nullable=False))
    calls: int
    errors: int


class Approval(SQLModel, table=True):
    __tablename__ = "approvals"
    id: str = Field(primary_key=True, max_length=40)
    agent_id: int = Field(foreign_key="agents.id", index=True)
    session_id: str = Field(foreign_key="sessions.id", index=True)  # retention keeps an approval's session
    rollout_id: int | None = None
    version: str = Field(max_length=100)
    tool: str = Field(max_length=200)
    tool_class: str = Field(max_length=20)
    cost_micros: int = micros()
    preview: str | None = Field(default=None, max_length=2000)
    stage: str | None = Field(default=None, max_length=20)  # the rollout's stage when the call was asked
    arguments: str | None = Field(default=None, sa_column=Column(Text, nullable=True))  # redacted, as Decision
    arguments_digest: str | None = Field(default=None, max_length=64)
    state: str = Field(default="pending", max_length=20, index=True)
    created_at: float
    expires_at: float
    decided_by: str | None = Field(default=None, max_length=200)
    decided_at: float | None = None
    decision_reason: str | None = Field(default=None, max_length=1000)
    consumed_at: float | None = None


class AlertReceipt(SQLModel, table=True):
    """An Alertmanager alert already acted on: the key of idempotent intake."""

    __tablename__ = "alert_receipts"
    __table_args__ = (UniqueConstraint("fingerprint", "starts_at"),)
    id: int | None = Field(default=None, primary_key=True)
    fingerprint: str = Field(max_length=100)
    starts_at: str = Field(max_length=60)
    agent: str | None = Field(default=None, max_length=63)
    alertname: str | None = Field(default=None, max_length=200)
    action: str = Field(max_length=30)
    received_at: float


class Lease(SQLModel, table=True):
    """A named lease so that exactly one scheduler acts at a time."""

    __tablename__ = "leases"
    name: str = Field(primary_key=True, max_length=100)
    holder: str = Field(max_length=200)
    expires_at: float


class Notification(SQLModel, table=True):
    """Outbox of transition notifications, delivered off the request path."""

    __tablename__ = "notifications"
    id: int | None = Field(default=None, primary_key=True)
    transition_id: int = Field(index=True)
    payload: str = Field(sa_column=Column(Text, nullable=False))
    attempts: int = 0
    next_attempt_at: float
    delivered_at: float | None = Field(default=None, index=True)
    last_error: str | None = Field(default=None, max_length=1000)


class SigningKey(SQLModel, table=True):
    """A secret made once and shared by every worker and replica (the dashboard's cookie signing key)."""

    __tablename__ = "signing_keys"
    name: str = Field(primary_key=True, max_length=50)
    value: str = Field(max_length=200)
    created_at: float


class SchedulerHeartbeat(SQLModel, table=True):
    """The leading scheduler's last tick, so that servers can tell whether anything evaluates gates."""

    __tablename__ = "scheduler_heartbeats"
    name: str = Field(primary_key=True, max_length=100)  # the lease's name
    holder: str = Field(max_length=200)
    ticked_at: float
    interval_s: float
    leading_since: float


class SignInFailure(SQLModel, table=True):
    """One failed dashboard sign-in, kept for the throttle's window (shared by every worker)."""

    __tablename__ = "sign_in_failures"
    id: int | None = Field(default=None, primary_key=True)
    username: str = Field(max_length=100, index=True)
    address: str = Field(max_length=100, index=True)
    at: float = Field(index=True)


class TokenRevocation(SQLModel, table=True):
    """One revoked token, in order: the newest id is every worker's cue to drop its token cache."""

    __tablename__ = "token_revocations"
    id: int | None = Field(default=None, primary_key=True)
    token_id: int = Field(foreign_key="tokens.id", unique=True)
    at: float
    actor: str = Field(max_length=200)


class StableChange(SQLModel, table=True):
    """The audit entry of a stable version set by a person outside any rollout (SPEC §5)."""

    __tablename__ = "stable_changes"
    id: int | None = Field(default=None, primary_key=True)
    agent_id: int = Field(foreign_key="agents.id", index=True)
    at: float
    actor: str = Field(max_length=200)
    reason: str = Field(max_length=1000)
    from_version: str | None = Field(default=None, max_length=100)
    to_version: str = Field(max_length=100)


class GateEvaluationCount(SQLModel, table=True):
    """Gate evaluations ever stored per agent and result, kept as they are written: /metrics reads these."""

    __tablename__ = "gate_evaluation_counts"
    agent_id: int = Field(primary_key=True, foreign_key="agents.id")
    result: str = Field(primary_key=True, max_length=20)
    count: int = 0


class RolloutDay(SQLModel, table=True):
    """One day of one rollout arm's traffic, summed before retention prunes its sessions and decisions.

    `rollout_id` is 0 for traffic outside any rollout; `day` counts days since the epoch (UTC).
    """

    __tablename__ = "rollout_days"
    agent_id: int = Field(primary_key=True, foreign_key="agents.id")
    rollout_id: int = Field(primary_key=True)
    arm: str = Field(primary_key=True, max_length=20)
    day: int = Field(primary_key=True)
    sessions: int = 0
    decisions: int = 0
    errors: int = 0
    spend_micros: int = micros(default=0)
