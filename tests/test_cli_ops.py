"""The release-manager CLI against a real server on a loopback port."""

from __future__ import annotations

import json

from click.testing import CliRunner
from flask.testing import FlaskClient

from gatekeeper.cli import main


def run(url: str, headers: dict[str, str], *args: str) -> tuple[int, str]:
    token = headers["Authorization"].split()[1]
    result = CliRunner().invoke(main, [*args, "--url", url, "--token", token])
    return result.exit_code, result.output


def test_status_promote_rollback_history(live_url: str, rm: dict[str, str], client: FlaskClient) -> None:
    assert run(live_url, rm, "status")[1].startswith("AGENT")
    client.post("/v1/agents", json={"name": "support-bot", "policy": "support-default",
                                    "stable_version": "v1"}, headers=rm)
    client.post("/v1/agents/support-bot/rollouts", json={"version": "v2"}, headers=rm)

    code, out = run(live_url, rm, "promote", "support-bot", "--reason", "twin looks good")
    assert code == 0, out
    assert "support-bot: promote -> shadow (progressing) by release_manager:alice" in out
    code, out = run(live_url, rm, "status")
    assert code == 0 and "support-bot  v1      v2         shadow  progressing" in out
    code, out = run(live_url, rm, "rollback", "support-bot", "--reason", "oops", "--to-stage", "twin")
    assert code == 0 and "-> twin (paused)" in out
    code, out = run(live_url, rm, "history", "support-bot", "--json")
    assert code == 0
    assert [e["action"] for e in json.loads(out)["items"]] == ["rollback", "promote", "start"]
    code, out = run(live_url, rm, "history", "support-bot")
    assert "3 of 3" in out and "twin looks good" in out
    assert any(line.split()[2:3] == ["v2"] and "shadow" in line for line in out.splitlines())  # the candidate


def test_cli_names_tiers_as_the_dashboard_does(live_url: str, rm: dict[str, str], client: FlaskClient) -> None:
    client.post("/v1/agents", json={"name": "support-bot", "policy": "support-default",
                                    "stable_version": "v1"}, headers=rm)
    client.post("/v1/agents/support-bot/rollouts", json={"version": "v2"}, headers=rm)
    for _ in range(3):
        code, out = run(live_url, rm, "promote", "support-bot", "--reason", "up")
    assert code == 0 and "-> canary 5% (progressing)" in out and "tier 1" not in out
    code, out = run(live_url, rm, "history", "support-bot")
    assert "canary 1%" in out and "canary 5%" in out and "/1" not in out


def test_errors_are_clear(live_url: str, viewer: dict[str, str]) -> None:
    code, out = run(live_url, viewer, "promote", "support-bot", "--reason", "x")
    assert code == 1 and "403 forbidden" in out
    code, out = run(live_url, viewer, "status", "ghost")
    assert code == 1 and "404 not_found: no agent named 'ghost'" in out
    result = CliRunner().invoke(main, ["status", "--url", "http://127.0.0.1:9", "--token", "x"])
    assert result.exit_code == 1 and "cannot reach http://127.0.0.1:9" in result.output
