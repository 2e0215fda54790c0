"""The lifecycle commands (agent, rollout, approvals, approve, reject) against a real server on a loopback
port, and the one-line errors of the whole command line."""

from __future__ import annotations

import json
from collections.abc import Callable

from click.testing import CliRunner, Result
from flask.testing import FlaskClient

from gatekeeper.cli import main


def cli(url: str, headers: dict[str, str] | None, *args: str) -> Result:
    env = {"GATEKEEPER_URL": url, "GATEKEEPER_TOKEN": headers["Authorization"].split()[1] if headers else ""}
    return CliRunner().invoke(main, list(args), env=env)


def ok(result: Result) -> str:
    assert result.exit_code == 0, result.output
    return result.stdout


def test_register_set_stable_list_start_and_abort(live_url: str, rm: dict[str, str]) -> None:
    out = ok(cli(live_url, rm, "agent", "register", "support-bot", "--policy", "support-default"))
    assert out.startswith("registered support-bot: policy support-default@") and "agent set-stable" in out
    listed = json.loads(ok(cli(live_url, rm, "agent", "list", "--json")))
    assert [(a["name"], a["stable_version"], a["rollout"]) for a in listed] == [("support-bot", None, None)]

    out = ok(cli(live_url, rm, "agent", "set-stable", "support-bot", "v1", "--reason", "in production since May"))
    assert out.strip() == "support-bot: stable - -> v1 by release_manager:alice: in production since May"
    out = ok(cli(live_url, rm, "rollout", "start", "support-bot", "v2", "--reason", "new prompt"))
    assert out.startswith("support-bot: start -> twin (progressing) by release_manager:alice: new prompt")
    table = ok(cli(live_url, rm, "agent", "list")).splitlines()
    assert table[0].split() == ["AGENT", "POLICY", "REVISION", "STABLE", "CANDIDATE", "TIER", "STATE"]
    assert table[2].split()[:1] + table[2].split()[3:] == ["support-bot", "v1", "v2", "twin", "progressing"]

    refused = cli(live_url, rm, "agent", "set-stable", "support-bot", "v3", "--reason", "sneaky")
    assert refused.exit_code == 1
    assert refused.stderr.splitlines() == ["gatekeeper: 409 conflict: agent support-bot has a rollout in progress; "
                                           "its completion sets the stable version (or abort it first) "
                                           "(field version)"]
    ok(cli(live_url, rm, "abort", "support-bot", "--reason", "wrong build"))
    ok(cli(live_url, rm, "agent", "set-stable", "support-bot", "v1.1", "--reason", "hotfix went out by hand"))
    status = json.loads(ok(cli(live_url, rm, "status", "support-bot", "--json")))
    assert status["stable_version"] == "v1.1" and status["rollout"]["state"] == "aborted"


def test_approvals_are_listed_approved_and_rejected(live_url: str, rm: dict[str, str], client: FlaskClient,
                                                    make_token: Callable[..., dict[str, str]]) -> None:
    ok(cli(live_url, rm, "agent", "register", "support-bot", "--policy", "support-default", "--stable-version", "v1"))
    ok(cli(live_url, rm, "rollout", "start", "support-bot", "v2"))
    bot = make_token("agent", agent="support-bot")
    asked = []
    for _ in range(2):
        session = client.post("/v1/sessions", json={"agent": "support-bot", "environment": "twin"}, headers=bot).json
        decision = client.post("/v1/decisions", json={"session_id": session["session_id"], "tool": "send_email",
                                                      "cost": 0.01, "preview": "email ana"}, headers=bot).json
        assert decision["verdict"] == "approval_required", decision
        asked.append(decision["approval_id"])

    lines = ok(cli(live_url, rm, "approvals")).splitlines()
    assert lines[0].split() == ["ID", "AGENT", "VERSION", "STAGE", "TOOL", "CLASS", "COST", "STATE", "AGE", "PREVIEW"]
    assert sorted(line.split()[0] for line in lines[2:4]) == sorted(asked) and lines[-1] == "2 pending approval(s)"
    assert all("send_email  irreversible  $0.01  pending" in line for line in lines[2:4])

    out = ok(cli(live_url, rm, "approve", asked[0], "--reason", "ana asked for it"))
    assert out.strip() == f"{asked[0]}: approved by release_manager:alice: support-bot send_email (irreversible, $0.01)"
    ok(cli(live_url, rm, "reject", asked[1], "--reason", "not this one"))
    assert json.loads(ok(cli(live_url, rm, "approvals", "--json"))) == []
    decided = json.loads(ok(cli(live_url, rm, "approvals", "--state", "all", "--json")))
    assert {(a["approval_id"], a["state"], a["decision_reason"]) for a in decided} == {
        (asked[0], "approved", "ana asked for it"), (asked[1], "rejected", "not this one")}
    again = cli(live_url, rm, "approve", asked[1], "--reason", "changed my mind")
    assert again.exit_code == 1 and again.stderr.startswith("gatekeeper: 409 conflict:")
    assert len(again.stderr.splitlines()) == 1


def test_every_error_is_one_line_naming_what_is_missing(live_url: str, viewer: dict[str, str]) -> None:
    no_token = cli(live_url, None, "agent", "list")
    assert no_token.exit_code == 1
    assert no_token.stderr.splitlines() == ["gatekeeper: no token: set GATEKEEPER_TOKEN or pass --token (a release "
                                            "manager's token: gatekeeper token create --role release_manager "
                                            "--name NAME)"]
    nowhere = cli("http://127.0.0.1:9", viewer, "approvals")
    assert nowhere.exit_code == 1 and len(nowhere.stderr.splitlines()) == 1
    assert nowhere.stderr.startswith("gatekeeper: cannot reach http://127.0.0.1:9 (set GATEKEEPER_URL or pass --url): "
                                     "[Errno 111] Connection refused")
    unknown = cli(live_url, viewer, "rollout", "begin", "bot", "v2")
    assert unknown.exit_code == 2
    assert unknown.stderr.splitlines() == ["main rollout: No such command 'begin'. (see `main rollout --help`)"]
    typo = cli(live_url, viewer, "aprove", "x")
    assert typo.exit_code == 2
    assert "No such command 'aprove'. (Did you mean one of: 'approvals', 'approve'" in typo.stderr
    missing = cli(live_url, viewer, "approve", "x")
    assert missing.exit_code == 2
    assert missing.stderr.splitlines() == ["main approve: Missing option '--reason' / '-r'. "
                                           "(see `main approve --help`)"]
    forbidden = cli(live_url, viewer, "agent", "register", "bot", "--policy", "support-default")
    assert forbidden.exit_code == 1
    assert forbidden.stderr.splitlines() == ["gatekeeper: 403 forbidden: role viewer may not do this; needs "
                                             "release_manager"]
    assert cli(live_url, viewer, "--help").exit_code == 0
    bare = cli(live_url, viewer, "agent")  # a group alone shows its help, not a folded line
    assert bare.exit_code == 2 and "Commands:\n  list " in bare.stderr and "set-stable" in bare.stderr
