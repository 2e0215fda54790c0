"""The living twin through the MCP gateway, on real processes over loopback.

`gatekeeper serve`, `gatekeeper scheduler` and `gatekeeper gateway` run as a release manager runs
them, in front of two real upstream MCP servers (tests/support/mcp_upstream.py) whose tools write
their side effects to files: the live one, and the twin, whose `refund_payment` the test can make
answer differently. The agent is a real MCP `ClientSession` driven by a small script whose next call
depends on the refund's answer. A stable session served live through the gateway becomes a scenario
(`gatekeeper scenario from-session`, the CLI); the candidate's twin runs through the gateway
(`Gatekeeper-Environment: twin`, `Gatekeeper-Scenario`) are judged against it when their MCP sessions
end; the stable version's own twin run (`Gatekeeper-Arm: stable`) is faithful; once the twin drifts,
its stable runs diverge and the rollout holds in twin with `twin_unfaithful`.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import mcp_types as types
import pytest
import yaml

from tests.support.living_twin import POLICY, agent_status, wait_for
from tests.support.mcp_gateway import McpProcesses, connect, effects, run_async, write_gateway_file
from tests.support.processes import Deployment


def _text(result: types.CallToolResult) -> str:
    assert not result.is_error, result
    return " ".join(block.text for block in result.content if isinstance(block, types.TextContent))


def agent_run(url: str, token: str, *, amount: int = 20, **twin: str) -> list[str]:
    """One refund task through the gateway: look up, refund, then email, or annotate the ticket when the
    refund says it was already done; `twin` are the Gatekeeper-* headers of a twin run (none: live)."""
    if twin:
        twin = {"Environment": "twin", "Twin-Snapshot-At": datetime.now(UTC).isoformat(), **twin}

    async def main() -> list[str]:
        async with connect(url, token, twin=twin) as session:
            _text(await session.call_tool("lookup_customer", {"customer": "c-7"}))
            refunded = _text(await session.call_tool("refund_payment", {"order": "A-1", "amount": amount}))
            follow_up = "update_ticket" if "already refunded" in refunded else "send_email"
            _text(await session.call_tool(follow_up, {"to": "c-7@example.com"}))
            return ["lookup_customer", "refund_payment", follow_up]

    return run_async(main)


def sessions(deployment: Deployment, rm: str) -> list[dict[str, Any]]:
    """Return the agent's sessions, oldest first, as a release manager lists them (`gatekeeper sessions`)."""
    page = json.loads(deployment.cli("sessions", "twinbot", "--json", token=rm).stdout)
    assert page["next"] is None  # one page holds them all
    return list(reversed(page["items"]))






@pytest.mark.slow
def test_a_stable_session_recorded_through_the_gateway_becomes_a_scenario_and_a_drifting_twin_holds(
        tmp_path: Path) -> None:
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "twinpol.yaml").write_text(POLICY)
    drift = tmp_path / "twin-drifted"
    with Deployment(tmp_path, policy_dir=policies) as deployment, McpProcesses(tmp_path) as procs:
        deployment.cli("db", "upgrade")
        rm = deployment.cli("token", "create", "--role", "release_manager", "--name", "ana").stdout.strip()
        deployment.serve(workers=1)
        deployment.scheduler(interval="1s")
        deployment.cli("agent", "register", "twinbot", "--policy", "twinpol", token=rm)
        deployment.cli("agent", "set-stable", "twinbot", "v1", "--reason", "what runs today", token=rm)
        token = deployment.cli("token", "create", "--role", "agent", "--agent", "twinbot", "--name", "rt",
                               token=rm).stdout.strip()
        (live, live_effects), (twin, twin_effects) = procs.upstream("live"), procs.upstream("twin", drift=drift)
        url = procs.gateway(write_gateway_file(tmp_path / "gateway.yaml", {"twinbot": (live, twin)}),
                            env=deployment.env)

        # Production: the stable version serves a live session through the gateway, which records it.
        assert agent_run(url, token) == ["lookup_customer", "refund_payment", "send_email"]
        (recorded,) = sessions(deployment, rm)
        assert (recorded["environment"], recorded["arm"], recorded["version"]) == ("live", "stable", "v1")
        assert recorded["status"] == "ok"  # the MCP session's close ended it
        assert [e["tool"] for e in effects(live_effects)] == ["lookup_customer", "refund_payment", "send_email"]
        made = deployment.cli("scenario", "from-session", recorded["session_id"], "--name", "refund-a1", "--forbid",
                              "update_ticket", token=rm).stdout
        assert "scenario refund-a1 added to" in made and "expect: refund_payment, send_email" in made
        written = yaml.safe_load((policies / "twinpol.scenarios.yaml").read_text())
        assert written["scenarios"]["refund-a1"] == {
            "expect": ["refund_payment", "send_email"], "forbid": ["update_ticket"],
            "arguments": [{"order": "A-1", "amount": 20}, {"to": "c-7@example.com"}]}
        assert written["recorded"]["refund-a1"]["session"] == recorded["session_id"]

        deployment.cli("rollout", "start", "twinbot", "v2", "--reason", "faster refunds", token=rm)
        time.sleep(1.2)  # serve and the gateway reload the policy folder (GATEKEEPER_POLICY_RELOAD=1s)

        # The candidate's twin runs through the gateway, judged against the recorded scenario when they end.
        agent_run(url, token, amount=200, Scenario="refund-a1")  # the wrong amount
        agent_run(url, token, Scenario="refund-a1")
        wrong, right = sessions(deployment, rm)[1:]
        assert (wrong["environment"], wrong["arm"], wrong["version"], wrong["scenario"]) == (
            "twin", "candidate", "v2", "refund-a1")
        assert (wrong["passed"], right["passed"]) == (False, True)
        assert len(effects(live_effects)) == 3  # twin runs reach only the twin
        assert [e["arguments"].get("amount") for e in effects(twin_effects) if e["tool"] == "refund_payment"] == [
            200, 20]

        # The stable version's own twin run through the gateway reproduces production: faithful.
        agent_run(url, token, Scenario="refund-a1", Arm="stable")
        replay = sessions(deployment, rm)[-1]
        assert (replay["arm"], replay["version"], replay["passed"]) == ("stable", "v1", True)
        found = wait_for(deployment, rm, lambda s: (s.get("gate_report") or {}).get("values", {}).get("replays"))
        assert found["gate_report"]["values"]["fidelity"] == 1.0 and found["rollout"]["stage"] == "twin"
        assert any("too few runs" in r for r in found["gate_report"]["reasons"])  # 2 of 3 candidate runs

        # The twin drifts: its refund now answers "already refunded", so the stable version takes another path.
        drift.touch()
        for _ in range(2):
            assert agent_run(url, token, Scenario="refund-a1", Arm="stable")[-1] == "update_ticket"
        drift.unlink()  # the candidate's third run itself passes: only fidelity stops the rollout
        assert agent_run(url, token, Scenario="refund-a1")[-1] == "send_email"
        assert [row["passed"] for row in sessions(deployment, rm)[-3:]] == [False, False, True]
        wait_for(deployment, rm, lambda s: s["rollout"]["state"] == "held"
                 and "twin_unfaithful" in (s["rollout"].get("state_reason") or "")
                 and s["gate_report"]["values"]["runs"] == 3)  # an evaluation that saw the third run

        # What the release manager reads: held in twin because the twin no longer behaves as production.
        held = json.loads(deployment.cli("status", "twinbot", "--json", token=rm).stdout)
        assert (held["rollout"]["stage"], held["rollout"]["state"]) == ("twin", "held")
        assert held["rollout"]["state_reason"].startswith("twin gate: twin_unfaithful: the stable version")
        report = held["gate_report"]
        assert [r.split(":")[0] for r in report["reasons"]] == ["twin_unfaithful"]  # runs, pass rate, snapshot fine
        assert report["values"]["fidelity"] == 1 / 3 and report["values"]["runs"] == 3
        assert report["fidelity"]["diverging"] == [
            {"scenario": "refund-a1", "detail": "step 2: expected send_email, got update_ticket"}]
        time.sleep(1.5)  # still held on the next evaluations: no promotion past an unfaithful twin
        assert agent_status(deployment, rm)["rollout"]["stage"] == "twin"
