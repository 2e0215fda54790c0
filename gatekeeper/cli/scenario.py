"""`gatekeeper scenario from-session ID --name N`: a recorded session becomes a twin scenario.

The server writes the scenario to the scenario file beside the agent's policy (never to the
policy itself); URL and token come from --url/--token or GATEKEEPER_URL/GATEKEEPER_TOKEN.
"""

from __future__ import annotations

import json

import click

from gatekeeper.cli.ops import Remote, remote_options


@click.group()
def scenario() -> None:
    """Work with twin scenarios."""


@scenario.command("from-session")
@click.argument("session_id")
@click.option("--name", required=True, help="The new scenario's name.")
@click.option("--forbid", multiple=True, help="A tool the scenario must never call (repeatable).")
@click.option("--argument", "arguments", multiple=True,
              help="An argument that matters, as tool.field (repeatable; default: every scalar argument).")
@remote_options
def from_session(session_id: str, name: str, forbid: tuple[str, ...], arguments: tuple[str, ...], url: str,
                 token: str | None, as_json: bool) -> None:
    """Make a twin scenario from a recorded session: its side-effecting calls in order as expect."""
    body = {"name": name, "forbid": list(forbid), "arguments": list(arguments) if arguments else None}
    made = Remote(url, token).call("POST", f"/v1/sessions/{session_id}/scenario", body)
    if as_json:
        click.echo(json.dumps(made, indent=2))
        return
    click.echo(f"scenario {made['scenario']} added to {made['file']}")
    click.echo(f"  expect: {', '.join(made['expect']) or '-'}")
    if made["forbid"]:
        click.echo(f"  forbid: {', '.join(made['forbid'])}")
    recorded = made["recorded"]
    click.echo(f"  recorded from {recorded['arm']} {recorded['version']} ({recorded['environment']})"
               + (f", incident: {recorded['incident']}" if recorded.get("incident") else ""))
    if made.get("note"):
        click.echo(f"note: {made['note']}")
