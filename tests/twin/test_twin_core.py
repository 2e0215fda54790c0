"""The pure parts of the living twin: arguments in assertions, replays, drafts, fidelity, the gate, differences."""

from __future__ import annotations

import dataclasses

import pytest

from gatekeeper.core.differences import differences
from gatekeeper.core.fidelity import Fidelity, Replay, by_day, summarize
from gatekeeper.core.gates import SourceStatus, TwinRun, Where, evaluate_twin_gate
from gatekeeper.core.policy import TwinGate
from gatekeeper.core.trajectory import Call, draft, judge, replay
from gatekeeper.policy_files import load_policy_file
from tests.support.policy_texts import EXAMPLE

NOW = 1_800_000_000.0
LOOKUP = Call("lookup_customer", "read_only", {"customer": "c-7"})
REFUND = Call("refund_payment", "irreversible", {"order": "A-1", "amount": 20, "card_number": "[redacted]"})
EMAIL = Call("send_email", "irreversible", {"to": "c@x", "body": {"text": "hi"}})
RECORDED = [LOOKUP, REFUND, EMAIL]
STEPS = ["refund_payment", "send_email"]
ARGS = [{"order": "A-1", "amount": 20}, {"to": "c@x"}]


def test_a_draft_keeps_side_effecting_steps_and_their_known_scalar_arguments() -> None:
    assert draft(RECORDED) == (STEPS, ARGS)  # redacted and nested values are not known: left out
    assert draft(RECORDED, keep=["refund_payment.order"]) == (STEPS, [{"order": "A-1"}, {}])


@pytest.mark.parametrize(("calls", "passed", "problem"), [
    (RECORDED, True, None),
    ([LOOKUP, dataclasses.replace(REFUND, arguments={"order": "A-1", "amount": 200}), EMAIL], False,
     "expected refund_payment with {'order': 'A-1', 'amount': 20}"),
    ([LOOKUP, dataclasses.replace(REFUND, arguments=None), REFUND, EMAIL], True, None),  # a later call matches
])
def test_judge_checks_the_arguments_that_matter(calls: list[Call], passed: bool, problem: str | None) -> None:
    verdict = judge(calls, expect=STEPS, forbid=[], arguments=ARGS)
    assert verdict.passed is passed
    assert (problem is None and not verdict.problems) or (problem is not None and problem in verdict.problems[0])


@pytest.mark.parametrize(("calls", "faithful", "divergence", "detail"), [
    (RECORDED, True, None, ""),
    ([REFUND, LOOKUP, EMAIL], True, None, ""),  # read-only calls are not part of the trajectory
    ([LOOKUP, REFUND, Call("update_ticket", "reversible")], False, 1, "step 2: expected send_email, got update_ticket"),
    ([LOOKUP, REFUND], False, 1, "step 2: expected send_email, the run stopped"),
    ([*RECORDED, Call("update_ticket", "reversible")], False, 2, "step 3: unexpected update_ticket"),
    ([dataclasses.replace(REFUND, arguments={"order": "B-2", "amount": 20}), EMAIL], False, 0,
     "step 1: refund_payment expected {'order': 'A-1', 'amount': 20}, got {'order': 'B-2', 'amount': 20}"),
])
def test_a_replay_is_faithful_only_when_it_reproduces_every_side_effect(
        calls: list[Call], faithful: bool, divergence: int | None, detail: str) -> None:
    verdict = replay(calls, expect=STEPS, arguments=ARGS)
    assert (verdict.faithful, verdict.divergence, verdict.detail) == (faithful, divergence, detail)


def test_fidelity_per_day_and_the_newest_divergence_of_each_scenario() -> None:
    runs = [Replay("a", "s1", NOW - 86_400, True), Replay("a", "s2", NOW, False, 1, "older"),
            Replay("a", "s3", NOW + 10, False, 0, "newest"), Replay("b", "s4", NOW + 20, True)]
    found = summarize(runs)
    assert (found.replays, found.faithful, found.value) == (4, 2, 0.5)
    assert found.diverging == (("a", "newest"),)
    assert [(day % 86_400, f.value) for day, f in by_day(runs)] == [(0.0, 1.0), (0.0, 1 / 3)]
    assert Fidelity(0, 0).value is None


GATE = TwinGate(min_runs=1, min_pass_rate=0.5, max_twin_age_s=3600, min_fidelity=0.9, min_replays=3)
RUNS = [TwinRun("refund", True, NOW - 60)]


def gate(fidelity: Fidelity, twin_gate: TwinGate = GATE) -> tuple[str, tuple[str, ...], dict[str, object]]:
    report = evaluate_twin_gate(twin_gate, RUNS, scenarios=["refund"], where=Where("twin", 0, "twin"),
                                source=SourceStatus("builtin"), now=NOW, fidelity=fidelity,
                                differences=[{"kind": "stated", "text": "fake payments"}])
    return report.result, report.decision.reasons, report.as_dict()


def test_the_twin_gate_holds_with_twin_unfaithful_below_min_fidelity() -> None:
    result, reasons, shown = gate(Fidelity(4, 2, (("refund", "step 2: expected send_email, got update_ticket"),)))
    assert result == "hold"
    assert reasons == ("twin_unfaithful: the stable version reproduced its recorded production trajectory in only "
                       "2 of 4 twin replays (fidelity 0.50 < 0.90), so the twin no longer behaves like production; "
                       "diverging: refund (step 2: expected send_email, got update_ticket)",)
    assert shown["fidelity"] == {"value": 0.5, "replays": 4, "faithful": 2, "diverging": [
        {"scenario": "refund", "detail": "step 2: expected send_email, got update_ticket"}]}
    assert shown["differences"] == [{"kind": "stated", "text": "fake payments"}]


def test_too_few_replays_only_hold_and_a_faithful_twin_promotes() -> None:
    result, reasons, _ = gate(Fidelity(2, 0))
    assert result == "hold" and not any("twin_unfaithful" in r for r in reasons)
    assert reasons == ("too few replays: 2 of 3 stable replays of recorded scenarios",)
    assert gate(Fidelity(10, 9))[0] == "promote"
    without = dataclasses.replace(GATE, min_fidelity=None)
    result, _, shown = gate(Fidelity(0, 0), without)  # not required: reported, never judged
    assert result == "promote" and shown["values"]["fidelity"] is None  # type: ignore[index]


def test_computed_differences_name_parity_chaos_coverage_fidelity_and_snapshot_age() -> None:
    policy = load_policy_file(EXAMPLE)
    listed = differences(policy, fidelity=Fidelity(3, 2, (("x", "step 1"),)), snapshot_age_s=7200)
    found = {d["kind"]: d["text"] for d in listed}
    assert [d["text"][:40] for d in listed if d["kind"] == "parity"] == [
        "twin runs get canary's caps (20 calls, $", "expansion's caps (40 calls, $1.00 per se"]
    assert found["coverage"].startswith("no scenario expects update_ticket")
    assert found["chaos"] == ("failures rehearsed per tool class: read_only 1 of 2 (lookup_customer); "
                              "reversible 0 of 1; irreversible 1 of 2 (send_email)")
    assert found["fidelity"].startswith("fidelity 0.67: 2 of 3 stable replays reproduced production")
    assert found["snapshot"] == "the twin's data snapshot is 2.0h old (max 24h)"
    calm = dataclasses.replace(policy, twin=dataclasses.replace(policy.twin, chaos={}))
    chaos = next(d["text"] for d in differences(calm, fidelity=None, snapshot_age_s=None) if d["kind"] == "chaos")
    assert chaos.startswith("no failures are rehearsed")
    by_class = dataclasses.replace(policy, twin=dataclasses.replace(
        policy.twin, chaos={"irreversible": policy.twin.chaos["send_email"]}))  # a class entry covers its tools
    chaos = next(d["text"] for d in differences(by_class, fidelity=None, snapshot_age_s=None) if d["kind"] == "chaos")
    assert "irreversible 2 of 2 (refund_payment, send_email)" in chaos and "read_only 0 of 2" in chaos


def test_an_incident_is_the_kill_switch_or_the_alert_that_moved_the_rollout() -> None:
    from gatekeeper.scenarios import incident_label, incident_window
    from gatekeeper.store.models import Transition

    def moved(actor: str, metrics: str) -> Transition:
        return Transition(rollout_id=1, agent_id=1, at=NOW, actor=actor, action="kill", to_stage="shadow", to_tier=0,
                          to_state="killed", policy_revision="r", metrics=metrics)

    killed = moved("kill_switch", '{"window_s": 60, "error_rate": 0.4}')
    alert = moved("alertmanager", '{"alert": {"status": "firing", "labels": {"alertname": "HighErrors"}}}')
    assert (incident_label(killed), incident_window(killed)) == ("kill switch", (NOW - 60, NOW))
    assert (incident_label(alert), incident_window(alert)) == ("alert HighErrors", (NOW - 600, NOW))
