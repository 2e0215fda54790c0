"""One evaluation cycle on a real SQLite database, with the in-memory metrics source."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

from gatekeeper import gate_cycle, rollouts
from gatekeeper.core.gates import SourceStatus
from gatekeeper.core.tier_gate import TierSignals
from gatekeeper.errors import IllegalTransition
from gatekeeper.gate_cycle import due_rollouts, evaluate_all, evaluate_one, gather
from gatekeeper.metric_sources import BuiltinSource, InMemorySource
from gatekeeper.services import Services
from gatekeeper.store import evidence_records
from gatekeeper.store.models import GateEvaluation, Notification, PolicyRevision, Rollout, Transition
from gatekeeper.tier_signals import MetricsSource, SignalBatch
from tests.support.gates import FAST_POLICY, T0, add_session, place, rollout_of, rows, write_policy

HEALTHY = TierSignals(sessions=50, tool_calls=500, errors=2, p95_latency_s=0.3, spend_dollars=5.0)
FAILING = TierSignals(sessions=50, tool_calls=500, errors=250, p95_latency_s=0.3, spend_dollars=5.0)


def ladder_position(services: Services, agent: str = "bot") -> tuple[str, int, str]:
    rollout = rollout_of(services, agent)
    return rollout.stage, rollout.tier, rollout.state


def transitions(services: Services) -> list[Transition]:
    return rows(services, Transition)


def evaluations(services: Services) -> list[GateEvaluation]:
    return rows(services, GateEvaluation)


def test_healthy_candidate_climbs_every_tier_and_completes(services: Services) -> None:
    place(services)
    source = InMemorySource({("bot", "v2"): HEALTHY})
    seen = []
    for step in range(1, 5):
        outcomes = evaluate_all(services, source, now=T0 + step)
        assert [(o.result, o.transition) for o in outcomes] == [("promote", "promote")]
        seen.append(ladder_position(services))
    assert seen == [("canary", 1, "progressing"), ("expansion", 0, "progressing"),
                    ("expansion", 1, "progressing"), ("expansion", 1, "completed")]
    last = transitions(services)[-1]
    assert (last.actor, last.action, last.to_state) == ("scheduler", "promote", "completed")
    assert json.loads(last.metrics)["values"]["error_rate"] == pytest.approx(0.004)
    assert evaluate_all(services, source, now=T0 + 10) == []  # nothing active any more


def test_each_window_is_evaluated_once(services: Services) -> None:
    place(services)
    source = InMemorySource({("bot", "v2"): TierSignals(sessions=1)})  # too few: holds, stays on its tier
    assert len(evaluate_all(services, source, now=T0 + 1.2)) == 1
    assert evaluate_all(services, source, now=T0 + 1.7) == []  # same 1s window
    assert len(evaluate_all(services, source, now=T0 + 2.1)) == 1
    assert [e.window_key.rsplit(":", 1)[1] for e in evaluations(services)] == [str(int(T0 + 1)), str(int(T0 + 2))]


def test_unhealthy_candidate_holds_then_rolls_back_at_failure_limit(services: Services) -> None:
    place(services, stage="canary", tier=1)
    source = InMemorySource({("bot", "v2"): FAILING})
    first = evaluate_all(services, source, now=T0 + 1)
    assert [(o.result, o.transition) for o in first] == [("hold", "hold")]
    assert ladder_position(services) == ("canary", 1, "held")
    assert "error_rate failed: 0.5 > 0.1" in rollout_of(services).state_reason
    second = evaluate_all(services, source, now=T0 + 2)
    assert [(o.result, o.transition) for o in second] == [("rollback", "rollback")]
    assert ladder_position(services) == ("canary", 0, "paused")
    rollback = transitions(services)[-1]
    metrics = json.loads(rollback.metrics)
    assert metrics["values"]["error_rate"] == 0.5 and metrics["consecutive"]["failures"] == 2
    assert evaluate_all(services, source, now=T0 + 3) == []  # paused: only a person resumes it


def test_outage_holds_never_promotes_and_resumes_when_metrics_return(services: Services) -> None:
    place(services)
    source = InMemorySource({("bot", "v2"): HEALTHY})
    source.fail("connection refused")
    for step in range(1, 5):
        outcomes = evaluate_all(services, source, now=T0 + step)
        assert [o.result for o in outcomes] == ["error"]
        assert ladder_position(services) == ("canary", 0, "held")
    report = outcomes[0].report
    assert report["metrics_source"] == {"name": "memory", "available": False, "unavailable_since": T0 + 1,
                                        "error": "connection refused"}
    assert {c["result"] for c in report["checks"]} == {"error"}
    source.recover()
    assert [o.transition for o in evaluate_all(services, source, now=T0 + 5)] == ["promote"]
    assert ladder_position(services) == ("canary", 1, "progressing")


def test_an_outage_holds_as_the_outage_and_too_little_traffic_as_the_gate(services: Services) -> None:
    place(services)
    source = InMemorySource({("bot", "v2"): TierSignals(sessions=1)})
    source.fail("connection refused")
    evaluate_all(services, source, now=T0 + 1)
    assert (ladder_position(services)[2], rollout_of(services).held_by) == ("held", "outage")
    source.recover()  # back, but too few sessions: still held, now by the gate
    evaluate_all(services, source, now=T0 + 2)
    assert (ladder_position(services)[2], rollout_of(services).held_by) == ("held", "gate")
    source.set("bot", "v2", HEALTHY)
    evaluate_all(services, source, now=T0 + 3)
    assert (ladder_position(services)[2], rollout_of(services).held_by) == ("progressing", None)


@pytest.mark.parametrize("policy_changes", [{"gate": {"on_metrics_error": "rollback", "error_limit": 2}}])
def test_on_metrics_error_rollback_after_error_limit(services: Services) -> None:
    place(services, stage="canary", tier=1)
    source = InMemorySource()
    source.fail("timed out")
    assert [o.transition for o in evaluate_all(services, source, now=T0 + 1)] == ["hold"]
    assert [o.transition for o in evaluate_all(services, source, now=T0 + 2)] == ["rollback"]
    assert ladder_position(services) == ("canary", 0, "paused")


@pytest.mark.parametrize("policy_changes", [{"gate": {"soak": "10s"}}])
def test_hold_is_released_when_its_cause_clears_and_soak_waits(services: Services) -> None:
    place(services)
    source = InMemorySource({("bot", "v2"): TierSignals(sessions=1, tool_calls=5, errors=0)})
    evaluate_all(services, source, now=T0 + 1)
    assert ladder_position(services) == ("canary", 0, "held")
    assert "too few sessions: 1 < 3" in rollout_of(services).state_reason
    source.set("bot", "v2", HEALTHY)
    assert [o.transition for o in evaluate_all(services, source, now=T0 + 2)] == ["release"]
    assert ladder_position(services) == ("canary", 0, "progressing")
    waiting = evaluate_all(services, source, now=T0 + 3)
    assert [(o.result, o.transition) for o in waiting] == [("hold", None)]
    assert waiting[0].report["reasons"] == ["soaking: 3s of 10s"]
    assert [o.transition for o in evaluate_all(services, source, now=T0 + 10)] == ["promote"]


def test_alert_hold_is_not_lifted_by_the_gate(services: Services) -> None:
    place(services)
    rollouts.act(services, "bot", "hold", actor="alertmanager:am", reason="alert CandidateErrors firing", now=T0,
                 held_by="alert", held_by_alert="f00d")
    source = InMemorySource({("bot", "v2"): HEALTHY})
    outcomes = evaluate_all(services, source, now=T0 + 1)
    assert [(o.result, o.transition) for o in outcomes] == [("promote", None)]
    assert ladder_position(services) == ("canary", 0, "held")
    assert rollout_of(services).state_reason == "alert CandidateErrors firing"


def test_queries_do_not_grow_with_agents(services: Services) -> None:
    for index in range(5):
        place(services, f"bot{index}")
    source = InMemorySource({(f"bot{i}", "v2"): HEALTHY for i in range(5)})
    outcomes = evaluate_all(services, source, now=T0 + 1)
    assert sorted(o.transition or "" for o in outcomes) == ["promote"] * 5
    assert len(source.requests) == 5  # one batch of five requests, answered by one call


def test_history_and_agent_status_show_every_evaluation(services: Services, client: FlaskClient,
                                                        rm: dict[str, str]) -> None:
    place(services)
    source = InMemorySource({("bot", "v2"): FAILING})
    evaluate_all(services, source, now=T0 + 1)
    status = client.get("/v1/agents/bot", headers=rm).get_json()
    report: dict[str, Any] = status["gate_report"]
    assert (report["result"], report["tier_label"], report["transition"]) == ("hold", "canary 1%", "hold")
    assert next(c for c in report["checks"] if c["name"] == "error_rate")["result"] == "fail"
    items = client.get("/v1/agents/bot/history?kind=gate_evaluation", headers=rm).get_json()["items"]
    assert [i["action"] for i in items] == ["gate:hold"]
    assert items[0]["metrics"]["values"]["error_rate"] == 0.5


def run(tool: str, outcome: str | None = "ok") -> tuple[Any, ...]:
    return (tool, "allow", outcome, 10.0)


REFUND = [run("lookup_customer"), run("refund_payment"), run("send_email")]


def test_twin_gate_judges_runs_and_holds_on_a_stale_snapshot(services: Services) -> None:
    rollout = place(services, stage="twin")
    fresh, stale = T0 - 60, T0 - 7200
    for scenario, calls in [("refund-request", REFUND), ("refund-request", REFUND), ("faq", [run("search_kb")]),
                            ("faq", [run("search_kb")])]:
        add_session(services, rollout, environment="twin", scenario=scenario, calls=calls, twin_snapshot_at=stale)
    held = evaluate_all(services, InMemorySource(), now=T0 + 1)
    assert ladder_position(services) == ("twin", 0, "held")
    assert any("twin_snapshot_age_s failed" in r for r in held[0].report["reasons"])
    add_session(services, rollout, environment="twin", scenario="faq", calls=[run("search_kb")],
                twin_snapshot_at=fresh)
    assert [o.transition for o in evaluate_all(services, InMemorySource(), now=T0 + 2)] == ["promote"]
    assert ladder_position(services) == ("shadow", 0, "progressing")


def test_the_write_transaction_judges_the_evidence_gathered_before_it(services: Services) -> None:
    rollout = place(services, stage="twin")
    for scenario, calls in [("refund-request", REFUND), ("refund-request", REFUND), ("faq", [run("search_kb")]),
                            ("faq", [run("search_kb")])]:
        add_session(services, rollout, environment="twin", scenario=scenario, calls=calls, twin_snapshot_at=T0 - 7200)
    [item] = due_rollouts(services, now=T0 + 1)
    evidence = gather(services, item)  # read before the write transaction opens
    add_session(services, rollout, environment="twin", scenario="faq", calls=[run("search_kb")],
                twin_snapshot_at=T0 - 60)  # a fresh run lands meanwhile: the next window counts it
    outcome = evaluate_one(services, item, SignalBatch(SourceStatus("memory")), evidence, now=T0 + 1)
    assert outcome is not None and outcome.report["values"]["runs"] == 4
    assert ladder_position(services) == ("twin", 0, "held")
    assert [o.transition for o in evaluate_all(services, InMemorySource(), now=T0 + 2)] == ["promote"]


def test_twin_runs_breaking_expect_order_or_calling_forbid_fail(services: Services) -> None:
    rollout = place(services, stage="twin")
    broken_order = [run("refund_payment"), run("lookup_customer"), run("send_email")]
    forbidden = [*REFUND, run("update_ticket")]
    for calls in (REFUND, broken_order, forbidden):  # passed left unset: the gate judges them itself
        add_session(services, rollout, environment="twin", scenario="refund-request", calls=calls,
                    twin_snapshot_at=T0)
    add_session(services, rollout, environment="twin", scenario="faq", calls=[run("search_kb")], passed=False,
                twin_snapshot_at=T0)
    report = evaluate_all(services, InMemorySource(), now=T0 + 1)[0].report
    values = report["values"]
    assert (values["runs"], values["pass_rate"]) == (4, 0.25)
    assert any("pass_rate failed: 0.25 < 0.75" in r for r in report["reasons"])
    assert ladder_position(services) == ("twin", 0, "held")


def test_shadow_gate_on_mirrored_pairs(services: Services) -> None:
    rollout = place(services, stage="shadow")
    stable_calls = [run("lookup_customer"), run("refund_payment"), run("send_email")]
    same = [run("search_kb"), ("lookup_customer", "allow", "ok", 5.0), ("refund_payment", "shadow", None, None),
            ("send_email", "shadow", None, None)]
    different = [("send_email", "shadow", None, None, {"would_verdict": "deny", "would_reason": "sequence_before"})]
    for candidate in (same, same, same, different):
        stable = add_session(services, rollout, arm="stable", calls=stable_calls, started_at=T0)
        add_session(services, rollout, calls=candidate, mirror_of=stable, started_at=T0)
    report = evaluate_all(services, InMemorySource(), now=T0 + 1)[0].report
    assert report["values"] | {"traffic_percent": 0} == {"sessions": 4, "error_rate": 0.0,
                                                         "violation_rate": pytest.approx(1 / 13),
                                                         "agreement": 0.75, "traffic_percent": 0}
    assert (report["result"], report["transition"]) == ("promote", "promote")
    assert ladder_position(services) == ("canary", 0, "progressing")


def evaluate_concurrently(services: Services, source: MetricsSource, *, now: float, threads: int = 4) -> list[Any]:
    with ThreadPoolExecutor(max_workers=threads) as pool:
        batches = list(pool.map(lambda _: evaluate_all(services, source, now=now), range(threads)))
    return [outcome for batch in batches for outcome in batch]


def test_concurrent_cycles_act_once_per_window(services: Services) -> None:
    place(services)
    outcomes = evaluate_concurrently(services, InMemorySource({("bot", "v2"): HEALTHY}), now=T0 + 1)
    assert [o.transition for o in outcomes] == ["promote"]
    assert ladder_position(services) == ("canary", 1, "progressing")
    assert len(evaluations(services)) == 1


def test_on_postgres_the_builtin_source_gates_and_concurrent_cycles_act_once(postgres_services: Services) -> None:
    rollout = place(postgres_services)
    for _ in range(3):
        add_session(postgres_services, rollout, calls=[("search_kb", "allow", "ok", 30.0)], started_at=T0 + 0.5)
    source = BuiltinSource(postgres_services.db)
    outcomes = evaluate_concurrently(postgres_services, source, now=T0 + 1)
    assert [(o.result, o.transition) for o in outcomes] == [("promote", "promote")]
    assert outcomes[0].report["values"]["sessions"] == 3 and outcomes[0].report["metrics_source"]["name"] == "builtin"
    assert ladder_position(postgres_services) == ("canary", 1, "progressing")
    assert len(evaluations(postgres_services)) == 1


def seed_across_the_tier_start(services: Services) -> Rollout:
    """Place bot at canary 1% at T0 with three healthy sessions inside the tier and five failing ones before it."""
    rollout = place(services)
    for _ in range(3):
        add_session(services, rollout, calls=[("search_kb", "allow", "ok", 30.0)], started_at=T0 + 0.2)
    for _ in range(5):  # the previous tier's traffic, inside the 30 s window but before this tier began
        add_session(services, rollout, calls=[("search_kb", "allow", "error", 9_000.0)], started_at=T0 - 5)
    return rollout


def assert_only_the_tier_counts(services: Services) -> None:
    outcomes = evaluate_all(services, BuiltinSource(services.db), now=T0 + 1)
    values = outcomes[0].report["values"]
    assert (values["sessions"], values["tool_calls"], values["error_rate"]) == (3, 3, 0.0)
    assert values["p95_latency_s"] == pytest.approx(0.03)
    assert [o.transition for o in outcomes] == ["promote"]


def test_the_builtin_source_never_counts_traffic_from_before_the_tier(services: Services) -> None:
    seed_across_the_tier_start(services)
    assert_only_the_tier_counts(services)


def test_on_postgres_the_builtin_source_never_counts_traffic_from_before_the_tier(
        postgres_services: Services) -> None:
    seed_across_the_tier_start(postgres_services)
    assert_only_the_tier_counts(postgres_services)


def test_a_tier_gets_one_interval_before_its_first_evaluation(services: Services) -> None:
    place(services)
    source = InMemorySource({("bot", "v2"): HEALTHY})
    assert evaluate_all(services, source, now=T0 + 0.5) == []
    assert [o.transition for o in evaluate_all(services, source, now=T0 + 1)] == ["promote"]
    assert evaluate_all(services, source, now=T0 + 1.5) == []  # canary 5% was entered at T0 + 1


def test_twin_and_shadow_rollouts_batched_in_one_cycle_are_each_judged_on_their_own_evidence(
        services: Services) -> None:
    fresh, stale = place(services, "fresh", stage="twin"), place(services, "stale", stage="twin")
    for rollout, snapshot_at in ((fresh, T0 - 60), (stale, T0 - 7200)):
        for scenario, calls in [("refund-request", REFUND), ("refund-request", REFUND), ("faq", [run("search_kb")]),
                                ("faq", [run("search_kb")])]:
            add_session(services, rollout, environment="twin", scenario=scenario, calls=calls,
                        twin_snapshot_at=snapshot_at)
    shadows = {name: place(services, name, stage="shadow") for name in ("agreeing", "unseen")}
    for _ in range(3):
        stable = add_session(services, shadows["agreeing"], arm="stable", calls=[run("search_kb")], started_at=T0)
        add_session(services, shadows["agreeing"], calls=[run("search_kb")], mirror_of=stable, started_at=T0)
    outcomes = {o.agent: o for o in evaluate_all(services, InMemorySource(), now=T0 + 1)}
    assert {name: (o.result, o.transition) for name, o in outcomes.items()} == {
        "fresh": ("promote", "promote"), "stale": ("hold", "hold"), "agreeing": ("promote", "promote"),
        "unseen": ("hold", "hold")}
    assert outcomes["stale"].report["values"]["runs"] == 4 and outcomes["agreeing"].report["values"]["sessions"] == 3
    assert outcomes["unseen"].report["values"]["sessions"] == 0


def test_concurrent_cycles_over_many_chunks_act_once_per_rollout_and_window(
        services: Services, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gate_cycle, "CHUNK", 2)  # five rollouts: three write transactions per cycle
    for index in range(5):
        place(services, f"bot{index}")
    source = InMemorySource({(f"bot{i}", "v2"): HEALTHY for i in range(5)})
    outcomes = evaluate_concurrently(services, source, now=T0 + 1)
    assert sorted(o.agent for o in outcomes) == [f"bot{i}" for i in range(5)]
    assert {o.transition for o in outcomes} == {"promote"}
    assert sorted(e.rollout_id for e in evaluations(services)) == sorted(o.rollout_id for o in outcomes)
    assert sorted(t.rollout_id for t in transitions(services) if t.actor == "scheduler") == sorted(
        o.rollout_id for o in outcomes)


def test_a_chunk_that_collides_is_rolled_back_whole_and_stored_rollout_by_rollout(
        services: Services, monkeypatch: pytest.MonkeyPatch) -> None:
    for index in range(3):
        place(services, f"bot{index}")
    source = InMemorySource({(f"bot{i}", "v2"): HEALTHY for i in range(3)})
    due = due_rollouts(services, now=T0 + 1)
    taken = next(d for d in due if d.agent == "bot1")
    request = taken.signal_request()
    assert request is not None
    assert evaluate_one(services, taken, source.tier_signals([request], now=T0 + 1), gather(services, taken),
                        now=T0 + 1) is not None  # another scheduler got there first
    monkeypatch.setattr(gate_cycle, "due_rollouts", lambda svc, *, now: due)  # read before it did
    monkeypatch.setattr(evidence_records, "evaluated_windows", lambda ids, keys, *, db: set())  # and missed it
    outcomes = evaluate_all(services, source, now=T0 + 1)
    assert sorted(o.agent for o in outcomes) == ["bot0", "bot2"]  # bot1's window collided: it alone is left out
    assert sorted(e.rollout_id for e in evaluations(services)) == sorted(d.rollout_id for d in due)
    assert [ladder_position(services, f"bot{i}") for i in range(3)] == [("canary", 1, "progressing")] * 3


def test_transition_many_moves_each_rollout_as_transition_does_and_refuses_an_illegal_move_alone(
        services: Services) -> None:
    for name in ("up", "stuck"):
        place(services, name)
    with services.db.transaction() as db:
        locked = {agent.name: (agent, rollout) for agent, rollout in
                  evidence_records.lock_rollouts([rollout_of(services, n).id or 0 for n in ("up", "stuck")],
                                                 db=db).values()}
        loaded = services.policies.get("fast")
        moves = [rollouts.Move(loaded, *locked["up"], "promote", "gate: every check passed"),
                 rollouts.Move(loaded, *locked["stuck"], "release", "gate: nothing holds it")]  # not held
        done = rollouts.transition_many(db, moves, actor="scheduler", now=T0 + 1)
    assert isinstance(done[0], Transition) and isinstance(done[1], IllegalTransition)
    assert ladder_position(services, "up") == ("canary", 1, "progressing")
    assert ladder_position(services, "stuck") == ("canary", 0, "progressing")
    entry = transitions(services)[-1]
    assert (entry.actor, entry.action, entry.reason, entry.rollout_id) == (
        "scheduler", "promote", "gate: every check passed", rollout_of(services, "up").id)
    assert [n.transition_id for n in rows(services, Notification)][-1] == entry.id  # one notification, for it


def test_rollouts_moved_together_under_a_new_policy_revision_store_it_once(
        services: Services, policy_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    for index in range(2):
        place(services, f"bot{index}")
    write_policy(policy_dir, {"gate": {**FAST_POLICY["gate"], "max_error_rate": 0.15}})  # a new revision
    source = InMemorySource({(f"bot{i}", "v2"): HEALTHY for i in range(2)})
    outcomes = evaluate_all(services, source, now=T0 + 1)
    assert [o.transition for o in outcomes] == ["promote", "promote"]
    assert "rolled back" not in caplog.text  # one chunk, one transaction
    revisions = {t.policy_revision for t in transitions(services) if t.actor == "scheduler"}
    assert len(revisions) == 1
    with services.db.reading() as db:
        assert db.get(PolicyRevision, revisions.pop()) is not None
