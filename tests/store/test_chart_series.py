"""The gate chart's series is thinned over time on the index: bounded, oldest and newest kept."""

from __future__ import annotations

import json

from flask import Flask

from gatekeeper import rollouts
from gatekeeper.store import dashboard_records
from gatekeeper.store.models import GateEvaluation, Rollout
from tests.support.app import svc


def test_a_long_rollout_is_charted_from_a_bounded_evenly_spread_sample(app: Flask) -> None:
    service = svc(app)
    agent = rollouts.register_agent(service, "support-bot", policy="support-default", stable_version="v1", now=0.0)
    with service.db.transaction() as db:
        rollout = Rollout(agent_id=agent.id or 0, candidate_version="v2", stage="canary", state="progressing",
                          tier_started_at=0.0, started_at=0.0, updated_at=0.0, policy_revision="r")
        db.add(rollout)
        db.flush()
        db.add_all([GateEvaluation(rollout_id=rollout.id or 0, agent_id=agent.id or 0, at=1000.0 + 30 * n,
                                   stage="canary", tier=0, window_key=f"w{n}", result="hold",
                                   report=json.dumps({"values": {"n": n}}), policy_revision="r")
                    for n in range(2000)])
    with service.db.reading() as db:
        series = dashboard_records.evaluation_values(rollout.id or 0, max_points=100, db=db)
        assert dashboard_records.evaluation_values((rollout.id or 0) + 1, db=db) == []
    numbers = [values["n"] for _, values in series]
    assert 95 <= len(series) <= 101
    assert numbers[-1] == 1999 and numbers[0] <= 20  # the newest evaluation, and the start, are shown
    gaps = {b - a for a, b in zip(numbers, numbers[1:], strict=False)}
    assert max(gaps) <= 21 and numbers == sorted(numbers)
