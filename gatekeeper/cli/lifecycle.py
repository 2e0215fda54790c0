"""The lifecycle commands a release manager runs against a server: agent register|set-stable|list,
rollout start, approvals, approve, reject. With `status`, `promote` and the other actions in
ops.py they take an agent from nothing to a completed rollout (SPEC §7)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from urllib.parse import quote

import click

from gatekeeper.cli.ops import Remote, print_transition, remote_options, table
from gatekeeper.core.vocabulary import APPROVAL_STATES

APPROVAL_FILTERS = (*APPROVAL_STATES, "all")


@click.group()
def agent() -> None:
    """Register agents, set their stable version, list them."""


@agent.command("register")
@click.argument("name")
@click.option("--policy", required=True, help="Name of a loaded policy that binds this agent.")
@click.option("--stable-version", default=None, help="The version live traffic gets today (else set it later).")
@remote_options
def register(name: str, policy: str, stable_version: str | None, url: str, token: str | None,
             as_json: bool) -> None:
    """Register an agent bound to a policy."""
    body = {"name": name, "policy": policy, **({"stable_version": stable_version} if stable_version else {})}
    payload = Remote(url, token).call("POST", "/v1/agents", body)
    if as_json:
        click.echo(json.dumps(payload, indent=2))
        return
    click.echo(f"registered {payload['name']}: policy {payload['policy']}@{payload.get('policy_revision') or '-'}, "
               f"stable {payload.get('stable_version') or '- (set it with `gatekeeper agent set-stable`)'}")


@agent.command("set-stable")
@click.argument("name")
@click.argument("version")
@click.option("--reason", "-r", required=True, help="Why; kept in the audit trail.")
@remote_options
def set_stable(name: str, version: str, reason: str, url: str, token: str | None, as_json: bool) -> None:
    """Set the stable version of an agent that has no rollout in progress."""
    payload = Remote(url, token).call("POST", f"/v1/agents/{quote(name, safe='')}/stable",
                                      {"version": version, "reason": reason})
    if as_json:
        click.echo(json.dumps(payload, indent=2))
        return
    click.echo(f"{payload['agent']}: stable {payload.get('from_version') or '-'} -> {payload['to_version']} "
               f"by {payload['actor']}: {payload['reason']}")


AGENT_HEADERS = ("AGENT", "POLICY", "REVISION", "STABLE", "CANDIDATE", "TIER", "STATE")


@agent.command("list")
@remote_options
def list_agents(url: str, token: str | None, as_json: bool) -> None:
    """List every agent with its policy, versions and rollout tier."""
    payload = Remote(url, token).call("GET", "/v1/agents")
    if as_json:
        click.echo(json.dumps(payload, indent=2))
        return
    rows = []
    for found in payload:
        rollout = found.get("rollout") or {}
        rows.append([found["name"], found["policy"], found.get("policy_revision") or "-",
                     found.get("stable_version") or "-", rollout.get("candidate_version", "-"),
                     rollout.get("tier_label", "-"), rollout.get("state", "-")])
    click.echo(table(rows, AGENT_HEADERS))


@click.group()
def rollout() -> None:
    """Start rollouts (move them with promote, rollback, pause, resume, kill, abort)."""


@rollout.command("start")
@click.argument("agent_name", metavar="AGENT")
@click.argument("version")
@click.option("--reason", "-r", default="", help="Why; kept in the audit trail.")
@remote_options
def start(agent_name: str, version: str, reason: str, url: str, token: str | None, as_json: bool) -> None:
    """Start a candidate VERSION of AGENT at twin."""
    body = {"version": version, **({"reason": reason} if reason else {})}
    payload = Remote(url, token).call("POST", f"/v1/agents/{quote(agent_name, safe='')}/rollouts", body)
    print_transition(payload, as_json)


APPROVAL_HEADERS = ("ID", "AGENT", "VERSION", "STAGE", "TOOL", "CLASS", "COST", "STATE", "AGE", "PREVIEW")


@click.command()
@click.option("--state", type=click.Choice(APPROVAL_FILTERS), default="pending", show_default=True)
@click.option("--quiet", "-q", is_flag=True, help="Print only the approval ids, one a line.")
@remote_options
def approvals(state: str, quiet: bool, url: str, token: str | None, as_json: bool) -> None:
    """List the approval queue (pending calls by default), newest first."""
    payload = Remote(url, token).call("GET", f"/v1/approvals?state={state}")
    if as_json or quiet:
        click.echo(json.dumps(payload, indent=2) if as_json else "\n".join(a["approval_id"] for a in payload))
        return
    now = datetime.now(UTC)
    rows = [[a["approval_id"], a["agent"], a["version"], a.get("stage") or "-", a["tool"], a["tool_class"],
             f"${a['cost']:.2f}", a["state"], _age(a["created_at"], now), (a.get("preview") or "")[:60]]
            for a in payload]
    click.echo(table(rows, APPROVAL_HEADERS))
    click.echo(f"{len(rows)} {state if state != 'all' else ''} approval(s)".replace("  ", " "))


def _age(created_at: str, now: datetime) -> str:
    seconds = max(0, int((now - datetime.fromisoformat(created_at)).total_seconds()))
    return f"{seconds // 60}m{seconds % 60:02d}s"


def _decide_command(verdict: str, doc: str) -> click.Command:
    @click.command(name=verdict, help=doc)
    @click.argument("approval_id")
    @click.option("--reason", "-r", required=True, help="Why; kept with the approval.")
    @remote_options
    def command(approval_id: str, reason: str, url: str, token: str | None, as_json: bool) -> None:
        payload = Remote(url, token).call("POST", f"/v1/approvals/{quote(approval_id, safe='')}/{verdict}",
                                          {"reason": reason})
        if as_json:
            click.echo(json.dumps(payload, indent=2))
            return
        click.echo(f"{payload['approval_id']}: {payload['state']} by {payload.get('decided_by')}: "
                   f"{payload['agent']} {payload['tool']} ({payload['tool_class']}, ${payload['cost']:.2f})")

    return command


def register_lifecycle(main: click.Group) -> None:
    """Add the lifecycle commands to the main group."""
    for command in (agent, rollout, approvals,
                    _decide_command("approve", "Approve a pending call; its repeated decision is allowed once."),
                    _decide_command("reject", "Reject a pending call; the agent's repeated decision is denied.")):
        main.add_command(command)
