"""A simulated fleet: agents that open sessions and ask before every tool call, through the SDK.

Each agent runs its policy's twin scenarios while its candidate is at twin, and live
sessions all the time; a live session that the candidate must shadow runs again on its
mirror. Three behaviours show the three outcomes a newcomer should see:

- healthy: the candidate behaves like stable and walks every stage to completed;
- spike: from canary on, the candidate's tool calls fail, and the kill switch trips;
- approval: one candidate session asks for an irreversible call and waits for a person.

In twin, the simulated test harness approves its own approval requests (parity with canary
means twin runs ask too); live approvals wait for a person in the dashboard.
"""

from __future__ import annotations

import logging
import random
import threading
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import click

from gatekeeper.cli.ops import Remote
from gatekeeper.client import Decision, Gatekeeper, Session
from gatekeeper.core.policy import Policy
from gatekeeper.core.vocabulary import TRAFFIC_STAGES
from gatekeeper.errors import GatekeeperError

log = logging.getLogger(__name__)
COST = {"read_only": 0.004, "reversible": 0.02, "irreversible": 0.05}


@dataclass(frozen=True)
class Behaviour:
    """How one simulated agent behaves: its live flows, and what goes wrong with its candidate."""

    kind: str
    flows: tuple[tuple[str, ...], ...]
    spike_error_rate: float = 0.0
    approval_flow: tuple[str, ...] = ()


BEHAVIOURS: dict[str, Behaviour] = {
    "support-bot": Behaviour("healthy", (("search_kb", "lookup_customer", "update_ticket"),
                                         ("search_kb", "search_kb"), ("lookup_customer", "update_ticket"))),
    "code-assistant": Behaviour("spike", (("search_code", "read_file", "write_file", "run_tests",
                                           "open_pull_request"), ("search_code", "read_file")),
                                spike_error_rate=0.9),
    "billing-agent": Behaviour("approval", (("lookup_customer", "get_invoice"),
                                            ("lookup_customer", "list_payments", "get_invoice")),
                               approval_flow=("lookup_customer", "check_refund_eligibility", "issue_refund")),
}


def behaviour_for(agent: str, policy: Policy) -> Behaviour:
    """Return the agent's scripted behaviour, or a healthy one built from its read-only tools."""
    if agent in BEHAVIOURS:
        return BEHAVIOURS[agent]
    reads = tuple(tool for tool, kind in policy.tools.items() if kind == "read_only")[:3]
    return Behaviour("healthy", (reads or ("noop",),))


class SimulatedAgent(threading.Thread):
    """One agent's traffic: twin scenario runs, live sessions and their mirrors, at `rate` sessions/s."""

    def __init__(self, gk: Gatekeeper, rm: Remote, agent: str, policy: Policy, *, rate: float,
                 stop: threading.Event, announce: Callable[[str], None], seed: int = 0) -> None:
        super().__init__(name=f"demo-{agent}", daemon=True)
        self.gk, self.rm, self.agent, self.policy = gk, rm, agent, policy
        self.behaviour = behaviour_for(agent, policy)
        self.rate, self.stop, self.announce = rate, stop, announce
        self.rng = random.Random(seed)
        self.sessions = 0
        self.approval_asked = False
        self._scenarios = list(policy.twin.scenarios.values())

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                self.step(self._stage())
            except GatekeeperError as exc:
                log.debug("%s: %s", self.agent, exc)
            self.stop.wait(1.0 / self.rate)

    def step(self, stage: str | None) -> None:
        """Run one round: a twin scenario while at twin, then one live session."""
        if stage == "twin" and self._scenarios:
            self.twin_run(self._scenarios[self.sessions % len(self._scenarios)].name)
        self.live_session(stage)
        self.sessions += 1

    def twin_run(self, scenario: str) -> None:
        """Run one scenario against the twin, approving its own approvals as a test harness does."""
        snapshot = datetime.now(UTC)
        session = self.gk.start_session(self.agent, environment="twin", scenario=scenario,
                                        twin_snapshot_at=snapshot)
        for tool in self.policy.twin.scenarios[scenario].expect:
            self.call(session, tool, error_rate=0.0, harness_approves=True)
        session.end("ok", passed=True)

    def live_session(self, stage: str | None) -> None:
        """Run one live session and, when the candidate must shadow it, its mirror."""
        session = self.gk.start_session(self.agent, session_key=uuid.uuid4().hex)
        if self._should_ask_approval(session, stage):
            self.approval_asked = True
            threading.Thread(target=self.wait_on_approval, args=(session,), daemon=True).start()
            return
        flow = self.rng.choice(self.behaviour.flows)
        self.run_flow(session, flow, stage)
        mirror = session.mirror_session()
        if mirror is not None:
            self.run_flow(mirror, flow, stage, arm="candidate")

    def run_flow(self, session: Session, flow: Sequence[str], stage: str | None, *, arm: str | None = None) -> None:
        """Ask for each call of a flow; stop at the first denial; end the session."""
        error_rate = self._error_rate(arm or session.arm, stage)
        for tool in flow:
            if self.call(session, tool, error_rate=error_rate).verdict == "deny":
                break
        session.end("ok")

    def call(self, session: Session, tool: str, *, error_rate: float, harness_approves: bool = False,
             approval_id: str | None = None) -> Decision:
        """Ask for one call; execute (simulated) and report it when allowed."""
        cost = COST[self.policy.tool_class(tool)]
        decision = session.decide(tool, cost, preview=f"{tool} for a simulated customer",
                                  approval_id=approval_id)
        if decision.verdict == "approval_required" and harness_approves and decision.approval_id:
            try:
                self.rm.call("POST", f"/v1/approvals/{decision.approval_id}/approve",
                             {"reason": "twin run: approved by the demo's test harness"})
            except click.ClickException:  # cancelled: the rollout left twin meanwhile, so this run is moot
                return decision
            return self.call(session, tool, error_rate=error_rate, approval_id=decision.approval_id)
        if decision.verdict == "allow":
            failed = self.rng.random() < error_rate
            # The estimate is what the gateway reserves: a healthy agent stays within it (no overruns, SPEC §2).
            actual = round(cost * self.rng.uniform(0.7, 1.0), 6)
            session.report(decision, "error" if failed else "ok", actual_cost=actual, latency_ms=self._latency_ms(tool))
        return decision

    def wait_on_approval(self, session: Session) -> None:
        """Ask for an irreversible call in a candidate session and wait until a person decides."""
        *before, tool = self.behaviour.approval_flow
        for step in before:
            self.call(session, step, error_rate=0.0)
        decision = self.call(session, tool, error_rate=0.0)
        if decision.verdict != "approval_required" or decision.approval_id is None:
            session.end("ok")
            return
        self.announce(f"{self.agent}: {tool} waits for a person: approval {decision.approval_id} "
                      f"is in the approvals queue")
        state = self._await(decision.approval_id)
        self.announce(f"{self.agent}: approval {decision.approval_id} {state}")
        if state == "cancelled":  # the rollout left the stage it was asked in: ask again in the next one
            self.approval_asked = False
        if state == "approved":
            self.call(session, tool, error_rate=0.0, approval_id=decision.approval_id)
        session.end("ok" if state == "approved" else "abandoned")

    def _await(self, approval_id: str) -> str:
        while not self.stop.wait(1.0):
            state = str(self.gk.approval(approval_id)["state"])
            if state != "pending":
                return state
        return "still pending when the demo stopped"

    def _should_ask_approval(self, session: Session, stage: str | None) -> bool:
        return (bool(self.behaviour.approval_flow) and not self.approval_asked and session.arm == "candidate"
                and stage in TRAFFIC_STAGES)

    def _error_rate(self, arm: str, stage: str | None) -> float:
        if arm == "candidate":
            return self.behaviour.spike_error_rate if stage in TRAFFIC_STAGES else 0.0
        return 0.002

    def _latency_ms(self, tool: str) -> float:
        slow = 2500.0 if tool == "run_tests" else 120.0
        return round(self.rng.uniform(0.5, 2.0) * slow, 1)

    def _stage(self) -> str | None:
        status = self.rm.call("GET", f"/v1/agents/{self.agent}")
        rollout = status.get("rollout") or {}
        return rollout.get("stage") if rollout.get("state") not in (None, "completed", "aborted") else None
