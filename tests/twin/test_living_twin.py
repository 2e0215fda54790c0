"""The living twin on real processes: a stable session recorded live becomes a scenario; fidelity drops.

`gatekeeper serve` (2 workers: the scenario is written by one, the other reloads it) and
`gatekeeper scheduler` run as a release manager runs them; the scenario is made with
`gatekeeper scenario from-session`; the agent's traffic goes through the SDK over the HTTP API
(not through the MCP gateway). The twin's refund tool is a stand-in the test can change: once it
answers differently, the stable version's own twin runs stop reproducing production, fidelity
drops and the rollout holds in twin with `twin_unfaithful`.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from gatekeeper.client import Gatekeeper, Session
from tests.support.living_twin import POLICY, agent_status, wait_for
from tests.support.processes import Deployment


class RefundTool:
    """The refund tool the agent calls: production's, or the twin's stand-in, which can drift."""

    def __init__(self) -> None:
        self.drifted = False

    def __call__(self, order: str) -> str:
        return "already refunded" if self.drifted else "refunded"


def agent_run(session: Session, refund: RefundTool, *, amount: int = 20) -> list[str]:
    """One refund task: look the customer up, refund, then email, or annotate the ticket if the refund failed."""
    done = []
    for tool, arguments in (("lookup_customer", {"customer": "c-7"}),
                            ("refund_payment", {"order": "A-1", "amount": amount})):
        decision = session.decide(tool, 0.01, arguments=arguments)
        assert decision.verdict == "allow", decision
        session.report(decision, "ok", latency_ms=20)
        done.append(tool)
    follow_up = "send_email" if refund("A-1") == "refunded" else "update_ticket"
    decision = session.decide(follow_up, 0.01, arguments={"to": "c-7@example.com"})
    assert decision.verdict == "allow", decision
    session.report(decision, "ok", latency_ms=20)
    return [*done, follow_up]






def twin_session(gk: Gatekeeper, *, arm: str | None = None) -> Session:
    return gk.start_session("twinbot", environment="twin", scenario="refund-a1", arm=arm,
                            twin_snapshot_at=datetime.now(UTC))


@pytest.mark.slow
def test_a_live_stable_session_becomes_a_scenario_and_a_drifting_twin_holds_the_rollout(tmp_path: Path) -> None:
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "twinpol.yaml").write_text(POLICY)
    refund = RefundTool()
    with Deployment(tmp_path, policy_dir=policies) as deployment:
        deployment.cli("db", "upgrade")
        rm = deployment.cli("token", "create", "--role", "release_manager", "--name", "ana").stdout.strip()
        deployment.serve(workers=2)
        deployment.scheduler(interval="1s")
        deployment.cli("agent", "register", "twinbot", "--policy", "twinpol", token=rm)
        deployment.cli("agent", "set-stable", "twinbot", "v1", "--reason", "what runs today", token=rm)
        agent = deployment.cli("token", "create", "--role", "agent", "--agent", "twinbot", "--name", "rt",
                               token=rm).stdout.strip()
        gk = Gatekeeper(deployment.url, agent, timeout=10.0)

        # Production: the stable version serves a live session, recorded by Gatekeeper.
        live = gk.start_session("twinbot")
        assert (live.arm, live.environment) == ("stable", "live")
        agent_run(live, refund)
        live.end("ok")
        made = deployment.cli("scenario", "from-session", live.session_id, "--name", "refund-a1", "--forbid",
                              "update_ticket", token=rm).stdout
        assert "scenario refund-a1 added to" in made and "expect: refund_payment, send_email" in made
        assert "note:" not in made  # the policy already names the file
        written = yaml.safe_load((policies / "twinpol.scenarios.yaml").read_text())
        assert written["scenarios"]["refund-a1"] == {
            "expect": ["refund_payment", "send_email"], "forbid": ["update_ticket"],
            "arguments": [{"order": "A-1", "amount": 20}, {"to": "c-7@example.com"}]}
        assert written["recorded"]["refund-a1"]["session"] == live.session_id
        assert "refund-a1" not in (policies / "twinpol.yaml").read_text()  # the person's file is untouched

        deployment.cli("rollout", "start", "twinbot", "v2", "--reason", "faster refunds", token=rm)
        time.sleep(1.2)  # both workers reload the policy folder (GATEKEEPER_POLICY_RELOAD=1s)

        # The candidate's twin runs are judged against the recorded scenario, arguments included.
        wrong = twin_session(gk)
        assert wrong.arm == "candidate"
        agent_run(wrong, refund, amount=200)
        judged = wrong.end("ok", passed=True)
        assert judged["passed"] is False
        assert judged["trajectory"]["problems"] == [
            "expected refund_payment with {'amount': 20, 'order': 'A-1'} in order ['refund_payment', 'send_email']"]
        right = twin_session(gk)
        agent_run(right, refund)
        assert right.end("ok", passed=True)["passed"] is True

        # The stable version's own twin run reproduces production: faithful.
        replay = twin_session(gk, arm="stable")
        assert (replay.arm, replay.version) == ("stable", "v1")
        agent_run(replay, refund)
        assert replay.end("ok", passed=True)["trajectory"]["replay"] == {
            "faithful": True, "divergence": None, "detail": ""}
        status = wait_for(deployment, rm, lambda s: (s.get("gate_report") or {}).get("values", {}).get("replays"))
        report = status["gate_report"]
        assert report["values"]["fidelity"] == 1.0 and status["rollout"]["stage"] == "twin"
        assert any("too few runs" in r for r in report["reasons"])  # 2 of 3 candidate runs so far
        kinds = {d["kind"] for d in report["differences"]}
        assert {"stated", "parity", "chaos", "fidelity", "snapshot"} <= kinds

        # The twin drifts: the stable version's runs no longer do what it did in production.
        refund.drifted = True
        for _ in range(2):
            drifted = twin_session(gk, arm="stable")
            agent_run(drifted, refund)
            assert drifted.end("ok")["trajectory"]["replay"]["divergence"] == 1
        third = twin_session(gk)
        refund.drifted = False  # the candidate run itself passes: only fidelity stops the rollout
        agent_run(third, refund)
        assert third.end("ok", passed=True)["passed"] is True
        held = wait_for(deployment, rm, lambda s: s["rollout"]["state"] == "held"
                        and "twin_unfaithful" in (s["rollout"].get("state_reason") or ""))
        assert held["rollout"]["stage"] == "twin"
        report = held["gate_report"]
        assert report["values"]["fidelity"] == 1 / 3 and report["values"]["runs"] == 3
        assert report["fidelity"]["diverging"] == [
            {"scenario": "refund-a1", "detail": "step 2: expected send_email, got update_ticket"}]
        time.sleep(1.5)  # still held on the next evaluations: no promotion past an unfaithful twin
        assert agent_status(deployment, rm)["rollout"]["stage"] == "twin"
