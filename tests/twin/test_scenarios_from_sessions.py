"""Traces become scenarios through the API and the trace page; scenario files load beside the policy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from flask.testing import FlaskClient

from gatekeeper.policy_files import check_paths, load_policy_file
from gatekeeper.policy_problems import PolicyError
from tests.support.app import svc
from tests.support.dashboard import signed_in
from tests.support.runtime import POLICY, Runtime

FILE = "hotpath.scenarios.yaml"


def recorded_session(runtime: Runtime, *, extra: str | None = None) -> str:
    """Record a live stable session: a lookup, a refund with its arguments, an email."""
    session = runtime.session()["session_id"]
    for tool, arguments in (("lookup_customer", {"customer": "c-7"}),
                            ("refund_payment", {"order": "A-1", "amount": 20, "card_number": "4111"}),
                            ("send_email", {"to": "c@x"}), *([(extra, {})] if extra else [])):
        runtime.report(runtime.decide(session, tool, arguments=arguments)["decision_id"])
    runtime.ok(runtime.client.post(f"/v1/sessions/{session}/end", json={"status": "ok"}, headers=runtime.agent))
    return session


def make(runtime: Runtime, session: str, headers: dict[str, str] | None = None, **body: Any) -> Any:
    return runtime.client.post(f"/v1/sessions/{session}/scenario", json=body, headers=headers or runtime.rm)


def test_a_session_becomes_a_scenario_in_its_own_file_and_runs_once_the_policy_names_it(
        runtime: Runtime, policy_dir: Path) -> None:
    runtime.setup(stage=None)
    session = recorded_session(runtime)
    made = runtime.ok(make(runtime, session, name="refund-a1", forbid=["update_ticket"]))
    assert made["expect"] == ["refund_payment", "send_email"]
    assert made["arguments"] == [{"amount": 20, "order": "A-1"}, {"to": "c@x"}]  # card_number is redacted: not kept
    assert made["recorded"] | {"at": 0} == {"session": session, "version": "v1", "arm": "stable",
                                            "environment": "live", "at": 0, "incident": None}
    assert (made["file"], made["listed"]) == (str(policy_dir / FILE), False)
    assert made["note"] == f"add scenario_files: [{FILE}] to stages.twin of the policy to run it"
    assert (policy_dir / "hotpath.yaml").read_text() == POLICY  # the person's file is never rewritten
    written = yaml.safe_load((policy_dir / FILE).read_text())
    assert written["scenarios"]["refund-a1"]["forbid"] == ["update_ticket"]
    assert check_paths([str(policy_dir)])[1] == []  # the folder check skips the scenario file

    refused = runtime.client.post("/v1/sessions", json={"agent": "bot", "environment": "twin",
                                                        "scenario": "refund-a1"}, headers=runtime.agent)
    assert refused.status_code == 400  # not named by the policy yet
    (policy_dir / "hotpath.yaml").write_text(POLICY.replace("  twin:\n", f"  twin:\n    scenario_files: [{FILE}]\n"))
    svc(runtime.client.application).policies.reload()
    twin = runtime.ok(runtime.client.post("/v1/sessions", json={"agent": "bot", "environment": "twin",
                                                                "scenario": "refund-a1"}, headers=runtime.agent))
    runtime.report(runtime.decide(twin["session_id"], "lookup_customer")["decision_id"])
    runtime.report(runtime.decide(twin["session_id"], "refund_payment", arguments={"order": "A-1", "amount": 21})
                   ["decision_id"])
    ended = runtime.ok(runtime.client.post(f"/v1/sessions/{twin['session_id']}/end", json={"status": "ok"},
                                           headers=runtime.agent))
    assert ended["trajectory"]["problems"] == [
        "expected refund_payment with {'amount': 20, 'order': 'A-1'} in order ['refund_payment', 'send_email']"]
    again = runtime.ok(make(runtime, session, name="refund-a1-again"))  # the file the policy names now
    assert again["listed"] is True and again["note"] == ""


def test_scenarios_are_refused_for_agents_unknown_tools_taken_names_and_bad_names(runtime: Runtime) -> None:
    runtime.setup(stage=None)
    session = recorded_session(runtime)
    assert make(runtime, session, headers=runtime.agent, name="x").status_code == 403
    assert make(runtime, "0" * 24, name="x").status_code == 404
    assert make(runtime, session, name="../escape").status_code == 400
    assert make(runtime, session, name="refund-request").status_code == 409  # the policy's own scenario
    runtime.ok(make(runtime, session, name="once"))
    taken = make(runtime, session, name="once")
    assert taken.status_code == 409 and "already has a scenario 'once'" in taken.get_json()["error"]["message"]
    unknown = make(runtime, recorded_session(runtime, extra="wire_money"), name="wired")
    assert unknown.status_code == 400 and "wire_money" in unknown.get_json()["error"]["message"]


def test_a_broken_or_clashing_scenario_file_is_a_policy_problem_and_a_missing_one_holds_none(tmp_path: Path) -> None:
    policy = tmp_path / "hotpath.yaml"
    policy.write_text(POLICY.replace("  twin:\n", f"  twin:\n    scenario_files: [{FILE}]\n"))
    assert set(load_policy_file(policy).twin.scenarios) == {"refund-request"}  # the file is not there yet
    (tmp_path / FILE).write_text("scenarios:\n  refund-request: {expect: [send_email]}\n"
                                 "  odd: {expect: [teleport]}\n  fine: {expect: [send_email], extra: 1}\n")
    with pytest.raises(PolicyError) as broken:
        load_policy_file(policy)
    assert [(p.file, p.path) for p in broken.value.problems] == [(str(tmp_path / FILE), "scenarios.fine.extra")]
    (tmp_path / FILE).write_text("scenarios:\n  refund-request: {expect: [send_email]}\n  odd: {expect: [teleport]}\n")
    with pytest.raises(PolicyError) as clashing:
        load_policy_file(policy)
    assert sorted(str(p) for p in clashing.value.problems) == [
        f"{tmp_path / FILE}: scenarios.odd: tool 'teleport' is not in the policy's tools",
        f"{tmp_path / FILE}: scenarios.refund-request: is already a scenario of the policy or an earlier scenario file"]
    wrong_name = POLICY.replace("  twin:\n", "  twin:\n    scenario_files: [../elsewhere.yaml]\n")
    policy.write_text(wrong_name)
    with pytest.raises(PolicyError) as elsewhere:
        load_policy_file(policy)
    assert [p.path for p in elsewhere.value.problems] == ["stages.twin.scenario_files[0]"]


def test_the_trace_page_makes_a_scenario_for_a_release_manager_only(runtime: Runtime, policy_dir: Path,
                                                                    users: dict[str, str]) -> None:
    runtime.setup(stage=None)
    session = recorded_session(runtime)
    viewer = runtime.client.application.test_client()
    signed_in(viewer, "victor")
    assert "make-scenario" not in viewer.get(f"/sessions/{session}").get_data(as_text=True)
    manager: FlaskClient = runtime.client.application.test_client()
    csrf = signed_in(manager, "alice")
    page = manager.get(f"/sessions/{session}").get_data(as_text=True)
    assert 'data-testid="make-scenario-button"' in page
    answer = manager.post(f"/sessions/{session}/scenario", data={"name": "from-page", "forbid": "update_ticket",
                                                                 "csrf_token": csrf})
    assert answer.status_code == 303
    shown = manager.get(answer.headers["Location"]).get_data(as_text=True)
    assert "Scenario from-page added to" in shown and "expect refund_payment, send_email" in shown
    assert "from-page" in yaml.safe_load((policy_dir / FILE).read_text())["scenarios"]
    forged = viewer.post(f"/sessions/{session}/scenario", data={"name": "nope", "csrf_token": csrf})
    assert forged.status_code in (400, 403)


def test_the_sdk_runs_the_stable_version_in_the_twin_and_its_replay_is_judged(
        runtime: Runtime, policy_dir: Path, live_url: str) -> None:
    from gatekeeper_client import Gatekeeper

    (policy_dir / "hotpath.yaml").write_text(POLICY.replace("  twin:\n", f"  twin:\n    scenario_files: [{FILE}]\n"))
    runtime.setup(stage="twin")
    runtime.ok(make(runtime, recorded_session(runtime), name="refund-a1"))  # a live stable session at twin
    token = runtime.agent["Authorization"].removeprefix("Bearer ")
    with Gatekeeper(live_url, token, timeout=5) as gk:
        replays = []
        for follow_up in ("send_email", "update_ticket"):
            session = gk.start_session("bot", environment="twin", scenario="refund-a1", arm="stable")
            assert (session.arm, session.version) == ("stable", "v1")
            for tool, arguments in (("lookup_customer", {}), ("refund_payment", {"order": "A-1", "amount": 20}),
                                    (follow_up, {"to": "c@x"})):
                session.report(session.decide(tool, 0.01, arguments=arguments), "ok")
            replays.append(session.end("ok")["trajectory"]["replay"])
    assert replays == [{"faithful": True, "divergence": None, "detail": ""},
                       {"faithful": False, "divergence": 1, "detail": "step 2: expected send_email, got update_ticket"}]
    refused = runtime.client.post("/v1/sessions", json={"agent": "bot", "arm": "stable"}, headers=runtime.agent)
    assert refused.status_code == 400 and refused.get_json()["error"]["field"] == "arm"


def test_a_scenario_file_broken_by_hand_is_left_alone_and_named(runtime: Runtime, policy_dir: Path) -> None:
    runtime.setup(stage=None)
    (policy_dir / FILE).write_text("scenarios: [not, a, mapping]\n")
    refused = make(runtime, recorded_session(runtime), name="x")
    assert refused.status_code == 409 and f"the scenario file {policy_dir / FILE} has problems" in (
        refused.get_json()["error"]["message"])
    assert (policy_dir / FILE).read_text() == "scenarios: [not, a, mapping]\n"
