"""`gatekeeper sessions AGENT`: an agent's sessions, newest first, to find the id a trace or scenario needs.

URL and token come from --url/--token or GATEKEEPER_URL/GATEKEEPER_TOKEN.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote, urlencode

import click

from gatekeeper.cli.ops import Remote, remote_options, table

HEADERS = ("STARTED", "SESSION", "VERSION", "ARM", "STAGE", "ENV", "SCENARIO", "STATUS", "PASSED", "CALLS", "SPEND")


@click.command()
@click.argument("agent")
@click.option("--environment", type=click.Choice(["live", "twin"]), help="Only live sessions or twin runs.")
@click.option("--arm", type=click.Choice(["candidate", "stable"]))
@click.option("--status", type=click.Choice(["open", "ok", "error", "abandoned"]))
@click.option("--scenario", help="Only runs of this twin scenario.")
@click.option("--limit", type=click.IntRange(1, 500), default=20, show_default=True)
@click.option("--before", help="Continue from a previous page (the cursor it printed).")
@remote_options
def sessions(agent: str, environment: str | None, arm: str | None, status: str | None, scenario: str | None,
             limit: int, before: str | None, url: str, token: str | None, as_json: bool) -> None:
    """List an agent's sessions, newest first: id, version, arm, stage, status and a twin run's verdict."""
    asked = {"limit": limit, "before": before, "environment": environment, "arm": arm, "status": status,
             "scenario": scenario}
    path = f"/v1/agents/{quote(agent, safe='')}/sessions?" + urlencode({k: v for k, v in asked.items() if v})
    page = Remote(url, token).call("GET", path)
    if as_json:
        click.echo(json.dumps(page, indent=2))
        return
    click.echo(table([_row(s) for s in page["items"]], HEADERS) if page["items"] else "no session on this page")
    if page["next"]:
        click.echo(f"more: gatekeeper sessions {agent} --before {page['next']}"
                   + "".join(f" --{k} {v}" for k, v in asked.items() if v and k not in ("before", "limit")))


def _row(s: dict[str, Any]) -> list[Any]:
    passed = {True: "passed", False: "failed", None: "-"}[s.get("passed")]
    return [s["started_at"][:19].replace("T", " "), s["session_id"], s["version"] or "-", s["arm"],
            s["stage"] or "-", s["environment"], s["scenario"] or "-", s["status"], passed, s["tool_calls"],
            f"${s['spend']:.4f}"]
