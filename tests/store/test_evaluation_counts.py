"""/metrics counts gate evaluations from counters kept as the scheduler writes them, on both databases."""

from __future__ import annotations

import pytest
from flask import Flask
from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families

from gatekeeper.core.tier_gate import TierSignals
from gatekeeper.gate_cycle import evaluate_all
from gatekeeper.metric_sources import InMemorySource
from gatekeeper.services import Services
from gatekeeper.store import scrape_records
from gatekeeper.store.models import GateEvaluation
from tests.support.app import svc
from tests.support.gates import T0, app_overrides, place, policy_changes, policy_dir, rows  # noqa: F401 - fixtures

HEALTHY = TierSignals(sessions=50, tool_calls=500, errors=2, p95_latency_s=0.3, spend_dollars=5.0)
FAILING = TierSignals(sessions=50, tool_calls=500, errors=250, p95_latency_s=0.3, spend_dollars=5.0)


def scraped(client: FlaskClient) -> dict[tuple[str, str], float]:
    """Return gatekeeper_gate_evaluations_total by (agent, result) as a scrape shows it."""
    families = text_string_to_metric_families(client.get("/metrics").get_data(as_text=True))
    return {(s.labels["agent"], s.labels["result"]): s.value for f in families
            if f.name == "gatekeeper_gate_evaluations" for s in f.samples if s.name.endswith("_total")}


@pytest.mark.parametrize("db_url", ["sqlite", "postgres"], indirect=True)
def test_every_stored_evaluation_is_counted_once(app: Flask, client: FlaskClient) -> None:
    services: Services = svc(app)
    place(services, "bot")
    place(services, "other")
    assert scraped(client) == {}
    evaluate_all(services, InMemorySource({("bot", "v2"): HEALTHY, ("other", "v2"): FAILING}), now=T0 + 1)
    evaluate_all(services, InMemorySource({("bot", "v2"): HEALTHY}), now=T0 + 2)
    stored: dict[tuple[str, str], float] = {}
    names = {1: "bot", 2: "other"}
    for row in rows(services, GateEvaluation):
        key = (names[row.agent_id], row.result)
        stored[key] = stored.get(key, 0) + 1
    assert stored[("bot", "promote")] == 2 and sum(stored.values()) == 4
    assert scraped(client) == stored
    with services.db.transaction() as db:  # a batch of rows, as a batched insert would count them
        scrape_records.count_evaluations([(1, "hold"), (1, "hold"), (2, "hold")], db=db)
    stored[("bot", "hold")] = stored.get(("bot", "hold"), 0) + 2
    stored[("other", "hold")] = stored.get(("other", "hold"), 0) + 1
    assert scraped(client) == stored
