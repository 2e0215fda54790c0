"""Release-manager commands that talk to a running server: status, promote, rollback, pause, resume,
kill, abort, history. URL and token come from --url/--token or GATEKEEPER_URL/GATEKEEPER_TOKEN."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

import click
import requests

from gatekeeper.core.vocabulary import STAGES

TIMEOUT_S = 10.0


class Remote:
    """A tiny JSON client of the release-manager API."""

    def __init__(self, url: str, token: str | None) -> None:
        self.url = url.rstrip("/")
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        """Send one request; raise ClickException with the server's message on an error."""
        if not self.headers:
            raise click.ClickException("no token: set GATEKEEPER_TOKEN or pass --token (a release manager's "
                                       "token: gatekeeper token create --role release_manager --name NAME)")
        try:
            response = requests.request(method, self.url + path, json=body, headers=self.headers,
                                        timeout=TIMEOUT_S)
        except requests.RequestException as exc:
            raise click.ClickException(f"cannot reach {self.url} (set GATEKEEPER_URL or pass --url): "
                                       f"{_cause(exc)}") from None
        try:
            payload = response.json() if response.content else {}
        except ValueError:
            raise click.ClickException(f"{response.status_code} from {self.url}{path} is not JSON; is "
                                       "GATEKEEPER_URL a Gatekeeper server?") from None
        if response.status_code >= 400:
            error = payload.get("error", {}) if isinstance(payload, dict) else {}
            field = f" (field {error['field']})" if error.get("field") else ""
            raise click.ClickException(f"{response.status_code} {error.get('code', 'error')}: "
                                       f"{error.get('message', response.text)}{field}")
        return payload


def _cause(exc: requests.RequestException) -> str:
    found = re.findall(r"\[Errno -?\d+\] [^'\")]+", str(exc))
    return found[-1] if found else type(exc).__name__


def _remote_options(command: Any) -> Any:
    command = click.option("--json", "as_json", is_flag=True, help="Print the raw JSON response.")(command)
    command = click.option("--token", envvar="GATEKEEPER_TOKEN", help="Bearer token (GATEKEEPER_TOKEN).")(command)
    return click.option("--url", envvar="GATEKEEPER_URL", default="http://127.0.0.1:8000", show_default=True,
                        help="Server URL (GATEKEEPER_URL).")(command)


remote_options = _remote_options  # the lifecycle commands share them


def table(rows: Sequence[Sequence[Any]], headers: Sequence[str]) -> str:
    """Render rows as a plain aligned text table."""
    cells = [[str(h) for h in headers]] + [["" if c is None else str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    return "\n".join([lines[0], "  ".join("-" * w for w in widths), *lines[1:]])


def tier_name(where: dict[str, Any] | None) -> str:
    """Name a tier as the server, the dashboard and the history do (`canary 25%`)."""
    if not where:
        return "-"
    return str(where.get("label") or where.get("stage") or "-")


def _status_row(agent: dict[str, Any]) -> list[Any]:
    rollout = agent.get("rollout") or {}
    report = agent.get("gate_report") or {}
    # A completed rollout's candidate is the stable version now; an aborted one is a candidate no more.
    candidate = "-" if rollout.get("state") in ("completed", "aborted") else rollout.get("candidate_version", "-")
    return [agent["name"], agent.get("stable_version") or "-", candidate,
            rollout.get("tier_label", "-"), rollout.get("state", "-"), report.get("result", "-"),
            agent.get("pending_approvals", 0), rollout.get("state_reason", "")]


STATUS_HEADERS = ("AGENT", "STABLE", "CANDIDATE", "TIER", "STATE", "GATE", "APPROVALS", "REASON")


@click.command()
@click.argument("agent", required=False)
@_remote_options
def status(agent: str | None, url: str, token: str | None, as_json: bool) -> None:
    """Show every agent (or one) with its stage, tier, state and gate result."""
    remote = Remote(url, token)
    payload = remote.call("GET", f"/v1/agents/{agent}" if agent else "/v1/agents")
    if as_json:
        click.echo(json.dumps(payload, indent=2))
        for line in server_warnings(remote):
            click.echo(f"warning: {line}", err=True)  # stdout stays JSON for scripts
        return
    agents = [payload] if agent else payload
    click.echo(table([_status_row(a) for a in agents], STATUS_HEADERS))
    for a in agents if agent else []:
        for check in (a.get("gate_report") or {}).get("checks", []):
            click.echo(f"  {check['result']:<8} {check['name']}: {check.get('value')} "
                       f"{check.get('comparison', '')} {check.get('threshold')}")
    for a in agents:
        if lines := compare_lines(a):
            click.echo("\n".join([f"{a['name']}: comparison with stable not yet conclusive (holding)", *lines]))
    for line in server_warnings(remote):
        click.echo(f"warning: {line}")


def server_warnings(remote: Remote) -> list[str]:
    """Return what the server warns about (no scheduler ticking, a policy file that failed to load)."""
    try:
        ready = remote.call("GET", "/readyz")
    except click.ClickException:
        return []  # an unready server: the command's own call says what is wrong
    return [str(line) for line in ready.get("warnings", [])] if isinstance(ready, dict) else []


def compare_lines(agent: dict[str, Any]) -> list[str]:
    """Return one line per inconclusive comparison with stable: estimate, interval, and traffic still needed."""
    checks = (agent.get("gate_report") or {}).get("checks", [])
    return [f"  inconclusive {c['name']}: {c.get('detail', '')}" for c in checks
            if isinstance(c, dict) and c.get("result") == "inconclusive" and isinstance(c.get("compare"), dict)]


def _action_command(action: str, doc: str) -> click.Command:
    @click.command(name=action, help=doc)
    @click.argument("agent")
    @click.option("--reason", "-r", required=True, help="Why; kept in the audit trail.")
    @_remote_options
    def command(agent: str, reason: str, url: str, token: str | None, as_json: bool, **extra: Any) -> None:
        body: dict[str, Any] = {"reason": reason, **{k: v for k, v in extra.items() if v}}
        payload = Remote(url, token).call("POST", f"/v1/agents/{agent}/{action}", body)
        print_transition(payload, as_json)

    return command


def print_transition(payload: dict[str, Any], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(payload, indent=2))
        return
    entry = payload["transition"]
    click.echo(f"{payload['agent']}: {entry['action']} -> {tier_name(entry['to'])} "
               f"({entry['to']['state']}) by {entry['actor']}: {entry['reason']}")
    click.echo(table([_status_row(payload["status"])], STATUS_HEADERS))


@click.command()
@click.argument("agent")
@click.option("--limit", default=20, show_default=True)
@click.option("--offset", default=0)
@click.option("--kind", type=click.Choice(["all", "transition", "gate_evaluation"]), default="all")
@_remote_options
def history(agent: str, limit: int, offset: int, kind: str, url: str, token: str | None, as_json: bool) -> None:
    """Show an agent's transitions and gate evaluations, newest first."""
    page = Remote(url, token).call("GET", f"/v1/agents/{agent}/history?limit={limit}&offset={offset}&kind={kind}")
    if as_json:
        click.echo(json.dumps(page, indent=2))
        return
    rows = [[e["at"][:19].replace("T", " "), e.get("candidate_version") or "-", e["actor"], e["action"],
             tier_name(e.get("from")), tier_name(e["to"]), e["policy_revision"][:12], e["reason"]]
            for e in page["items"]]
    click.echo(table(rows, ("AT", "VERSION", "ACTOR", "ACTION", "FROM", "TO", "POLICY", "REASON")))
    click.echo(f"{offset + len(rows)} of {page['total']}")


def register_ops(main: click.Group) -> None:
    """Add the release-manager commands to the main group."""
    promote = _action_command("promote", "Advance one tier (--full completes the rollout).")
    promote.params.append(click.Option(["--full"], is_flag=True, help="Go to 100% and complete."))
    rollback = _action_command("rollback", "Roll back one tier, or to the start of --to-stage; then pause.")
    rollback.params.append(click.Option(["--to-stage"], type=click.Choice(STAGES)))
    for command in (status, history, promote, rollback,
                    _action_command("pause", "Pause the rollout."),
                    _action_command("resume", "Resume a paused, held or killed rollout."),
                    _action_command("kill", "Kill the candidate and revert per the policy."),
                    _action_command("abort", "Abort the rollout; stable keeps all traffic.")):
        main.add_command(command)
