"""Fixtures of the gateway tests: one real database, two real upstreams and one real gateway for the run.

Each test takes its own agent (`world.agent(stage)`), registered with stable v1 and a v2 rollout
walked up to the stage it needs, and an agent token; the processes are shared, so the
tests stay fast.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from gatekeeper import rollouts
from gatekeeper.config import Settings
from gatekeeper.core.bucketing import bucket, within
from gatekeeper.services import Services
from gatekeeper.store.tokens import create_token
from tests.support.mcp_gateway import McpProcesses, write_gateway_file

POLICY = """\
name: gw
agents: []
tools: {search_kb: read_only, lookup_customer: read_only, update_ticket: reversible, send_email: irreversible,
        refund_payment: irreversible, fail_tool: read_only, slow_tool: read_only, echo: read_only}
sequence_rules:
  - before: lookup_customer
    then: refund_payment
stages:
  shadow: {traffic_percent: 100, execute: [read_only]}
  canary: {tiers: [50], caps: {tool_calls_per_session: 3, spend_per_session: 1.00},
           approval_required: [irreversible]}
  expansion: {tiers: [100], caps: {tool_calls_per_session: 40, spend_per_session: 1.00}}
stable_caps: {tool_calls_per_session: 60, spend_per_session: 2.00}
kill_switch: {window: 60s, min_calls: 4, max_error_rate: 0.5, action: {revert_to: shadow}}
approvals: {expire_after: 5s}
"""
# Rehearsed failures of the twin (tests/gateway/test_gateway_chaos.py): agents bound with policy="gwchaos".
CHAOS_POLICY = """\
name: gwchaos
agents: []
tools: {update_ticket: reversible, search_kb: read_only}
stages:
  twin:
    chaos:
      update_ticket: {error_rate: 0.25, timeout_rate: 0.25, partial_rate: 0.15, malformed_rate: 0.15,
                      latency: 30ms, latency_rate: 0.3}
  canary: {tiers: [50], caps: {tool_calls_per_session: 60, spend_per_session: 1.00}}
  expansion: {tiers: [100], caps: {tool_calls_per_session: 60, spend_per_session: 1.00}}
stable_caps: {tool_calls_per_session: 60, spend_per_session: 2.00}
"""
# Twin scenario runs opened through the gateway (tests/gateway/test_gateway_twin_runs.py): policy="gwtwin".
TWIN_POLICY = """\
name: gwtwin
agents: []
tools: {update_ticket: reversible, send_email: irreversible, search_kb: read_only}
stages:
  twin:
    scenarios:
      ticket: {expect: [update_ticket], forbid: [send_email]}
      notify: {expect: [send_email]}
    chaos:
      irreversible: {timeout_rate: 1}
  canary: {tiers: [50], caps: {tool_calls_per_session: 20, spend_per_session: 1.00}, approval_required: []}
  expansion: {tiers: [100], caps: {tool_calls_per_session: 20, spend_per_session: 1.00}}
stable_caps: {tool_calls_per_session: 20, spend_per_session: 2.00}
"""
AGENTS = [f"gw-{n}" for n in range(32)]
LADDER = ["twin", "shadow", "canary", "expansion"]


@dataclass
class Agent:
    """One test's agent: its name, rollout id and agent token."""

    name: str
    rollout_id: int
    token: str

    def key(self, *, candidate: bool, percent: float = 50.0, start: int = 0) -> str:
        """Return a session key that lands in the candidate (or stable) arm at `percent`."""
        for n in itertools.count(start):
            if within(bucket(self.name, self.rollout_id, f"k{n}"), percent) == candidate:
                return f"k{n}"
        raise AssertionError("unreachable")


@dataclass
class World:
    """The module's database, upstreams and gateway."""

    svc: Services
    env: dict[str, str]
    gateway_url: str
    gateway_file: Path
    live_effects: Path
    twin_effects: Path
    names: Iterator[str] = field(default_factory=lambda: iter(AGENTS))

    def agent(self, stage: str | None, *, policy: str = "gw") -> Agent:
        """Register a fresh agent (stable v1) and walk a v2 rollout up to `stage` (None: no rollout)."""
        name, now = next(self.names), time.time()
        rollouts.register_agent(self.svc, name, policy=policy, stable_version="v1", now=now)
        rollout_id = 0
        if stage is not None:
            rollout_id = rollouts.start_rollout(self.svc, name, version="v2", actor="test", reason="t",
                                                now=now).rollout_id
            for _ in range(LADDER.index(stage)):
                rollouts.act(self.svc, name, "promote", actor="test", reason="t", now=time.time())
        with self.svc.db.transaction() as db:
            token, _ = create_token(name, role="agent", agent=name, now=now, db=db)
        return Agent(name, rollout_id, token)


@pytest.fixture(scope="session")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """A database, a live and a twin upstream, and `gatekeeper gateway` in front of them."""
    workdir = tmp_path_factory.mktemp("gateway")
    policies = workdir / "policies"
    policies.mkdir()
    (policies / "gw.yaml").write_text(POLICY)
    (policies / "gwchaos.yaml").write_text(CHAOS_POLICY)
    (policies / "gwtwin.yaml").write_text(TWIN_POLICY)
    env = {"GATEKEEPER_DATABASE_URL": f"sqlite:///{workdir / 'gatekeeper.db'}",
           "GATEKEEPER_POLICY_DIR": str(policies)}
    svc = Services.build(Settings(database_url=env["GATEKEEPER_DATABASE_URL"], policy_dir=policies))
    svc.db.upgrade()
    with McpProcesses(workdir) as procs:
        (live, live_effects), (twin, twin_effects) = procs.upstream("live"), procs.upstream("twin")
        config = write_gateway_file(workdir / "gateway.yaml", {agent: (live, twin) for agent in AGENTS})
        url = procs.gateway(config, env=env)
        yield World(svc, env, url, config, live_effects, twin_effects)
    svc.db.dispose()
