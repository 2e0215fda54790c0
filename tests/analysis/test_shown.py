"""A comparison shown where a person looks: the agent page's gate checklist and `gatekeeper status`."""

from __future__ import annotations

import json
from typing import Any

from click.testing import CliRunner
from flask.testing import FlaskClient

from gatekeeper.cli import main
from gatekeeper.cli.ops import compare_lines
from gatekeeper.core.comparison import ArmEvidence, ArmSample, Distribution, Moments
from gatekeeper.core.tier_gate import TierSignals
from gatekeeper.gate_cycle import evaluate_all
from gatekeeper.metric_sources import InMemorySource
from gatekeeper.services import Services
from tests.support.dashboard import signed_in
from tests.support.gates import T0, place

LATENCY = Distribution.of_samples([0.1 * (1 + i % 10) for i in range(400)])


def evaluated(services: Services, *, candidate_errors: int, calls: int) -> dict[str, Any]:
    place(services)
    arms = ArmEvidence(ArmSample(calls=Moments.binary(candidate_errors, calls), latency=LATENCY),
                       ArmSample(calls=Moments.binary(100, 10_000), latency=LATENCY))
    source = InMemorySource({("bot", "v2"): TierSignals(sessions=50, tool_calls=calls, errors=candidate_errors,
                                                        p95_latency_s=0.3, spend_dollars=5.0, arms=arms)})
    return evaluate_all(services, source, now=T0 + 1)[0].report


def test_the_checklist_shows_both_arms_and_the_interval(client: FlaskClient, services: Services,
                                                        users: dict[str, str]) -> None:
    evaluated(services, candidate_errors=6, calls=300)
    signed_in(client, "alice")
    page = client.get("/agents/bot").get_data(as_text=True)
    row = page[page.index('data-check="error_rate vs stable"'):]
    row = row[:row.index("</tr>")]
    assert "candidate 2.00% vs stable 1.00%" in row and "300 vs 10,000 calls" in row
    assert "+100%" in row and "[" in row and "≤ +50% vs stable" in row and "… inconclusive" in row
    overview = client.get("/").get_data(as_text=True)
    assert "error rate vs stable: +100% (limit ≤ +50%) — inconclusive" in overview


def test_status_names_an_inconclusive_comparison_and_the_traffic_it_needs(services: Services, live_url: str,
                                                                          rm: dict[str, str]) -> None:
    report = evaluated(services, candidate_errors=6, calls=300)
    lines = compare_lines({"name": "bot", "gate_report": json.loads(json.dumps(report))})
    assert lines and lines[0].startswith("  inconclusive error_rate vs stable: +100% [")
    assert "needs ~" in lines[0] and "more candidate calls" in lines[0]
    token = rm["Authorization"].removeprefix("Bearer ")
    for args in (["status"], ["status", "bot"]):
        result = CliRunner().invoke(main, [*args, "--url", live_url, "--token", token])
        assert result.exit_code == 0, result.output
        assert "bot: comparison with stable not yet conclusive (holding)" in result.output
        assert lines[0] in result.output.splitlines()
    healthy = compare_lines({"name": "bot", "gate_report": {"checks": [{"name": "sessions", "result": "pass"}]}})
    assert healthy == []
