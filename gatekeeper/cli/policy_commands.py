"""`gatekeeper policy check PATH...`, `gatekeeper policy schema` and `gatekeeper policy backtest POLICY --agent A`.

`check`: each valid file gets one summary line (name@revision, agents, tiers); each problem gets
one line `file: path: message`. Exit status: 0 when everything is valid, 1 when any problem was
found, 2 when a PATH does not exist (click's usage error).

`schema`: prints the JSON Schema of policy files, generated from the pydantic models in
gatekeeper/policy_format.py; policies/policy.schema.json is this output, and the example policies
name it in their first line so editors validate them as they are typed.

`backtest`: replays a recorded rollout from the database through a policy file's gates (see
gatekeeper/backtest.py) and prints what the policy would have done and when, beside what happened.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

import click

from gatekeeper.backtest import Backtest, Event, backtest
from gatekeeper.config import Settings
from gatekeeper.core.policy import Policy
from gatekeeper.errors import GatekeeperError
from gatekeeper.policy_files import check_paths, load_policy_file
from gatekeeper.policy_format import policy_schema
from gatekeeper.policy_problems import PolicyError
from gatekeeper.store.db import Database


@click.group()
def policy() -> None:
    """Work with policy files."""


def summary_line(file: str, loaded: Policy, revision: str) -> str:
    """Return the one-line summary `policy check` prints for a valid file."""
    agents = ",".join(loaded.agents) or "-"
    canary = ",".join(f"{tier:g}" for tier in loaded.canary.tiers)
    expansion = ",".join(f"{tier:g}" for tier in loaded.expansion.tiers)
    return f"ok  {file}  {loaded.name}@{revision}  agents={agents}  canary={canary}%  expansion={expansion}%"


@policy.command("check")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True))
def check(paths: tuple[str, ...]) -> None:
    """Validate policy files (directories expand to their *.yaml and *.yml files)."""
    valid, problems = check_paths(paths)
    for file, loaded, revision in valid:
        click.echo(summary_line(file, loaded, revision))
    for problem in problems:
        click.echo(str(problem))
    if problems:
        files = len({problem.file for problem in problems})
        click.echo(f"{len(problems)} problem(s) in {files} file(s)", err=True)
        raise SystemExit(1)


@policy.command("schema")
def schema() -> None:
    """Print the JSON Schema of policy files (shipped as policies/policy.schema.json)."""
    click.echo(json.dumps(policy_schema(), indent=2))


@policy.command("backtest")
@click.argument("policy_file", type=click.Path(exists=True, dir_okay=False))
@click.option("--agent", required=True, help="The agent whose recorded rollout is replayed.")
@click.option("--rollout", "rollout_id", type=int, default=None, help="Rollout id (default: the newest).")
@click.option("--json", "as_json", is_flag=True, help="Print the backtest as JSON.")
@click.option("--db", "db_url", envvar="GATEKEEPER_DATABASE_URL",
              help="Database URL (default: GATEKEEPER_DATABASE_URL or sqlite:///gatekeeper.db).")
def backtest_command(policy_file: str, agent: str, rollout_id: int | None, as_json: bool, db_url: str | None
                     ) -> None:
    """Replay a recorded rollout through POLICY's gates: what it would have done and when, beside what did."""
    try:
        loaded = load_policy_file(policy_file)
    except PolicyError as exc:
        raise click.ClickException(str(exc)) from None
    database = Database(db_url or Settings.from_env().database_url)
    try:
        result = backtest(database, loaded, agent=agent, rollout_id=rollout_id, now=time.time())
    except GatekeeperError as exc:
        raise click.ClickException(exc.message) from None
    finally:
        database.dispose()
    click.echo(json.dumps(result.as_dict(), indent=2) if as_json else backtest_text(result))


def backtest_text(result: Backtest) -> str:
    """Render a backtest: a header, both sets of moves in time order, and the first difference."""
    start = result.actual[0].at if result.actual else 0.0
    rows = sorted([(e, "would") for e in result.would] + [(e, "actual") for e in result.actual],
                  key=lambda pair: (pair[0].at, pair[1] == "would"))
    lines = [f"{result.agent} rollout #{result.rollout_id} ({result.candidate}) replayed through "
             f"{result.policy}@{result.revision}: {result.evaluations} gate evaluations", "",
             f"{'AT (UTC)':<20} {'+TIME':>8}  {'WHO':<7} {'TIER':<16} {'ACTION':<9} REASON"]
    for event, who in rows:
        state = f" ({event.state})" if event.state and event.state != "progressing" else ""
        lines.append(f"{_utc(event.at):<20} {_elapsed(event.at - start):>8}  {who:<7} {event.tier_label:<16} "
                     f"{event.action:<9} {event.reason[:140]}{state}")
    lines += ["", "would: " + _ending(result.would, start), "actual: " + _ending(result.actual, start)]
    return "\n".join(lines)


def _ending(events: tuple[Event, ...], start: float) -> str:
    final = next((e for e in events if e.action in ("rollback", "kill")), None) or (events[-1] if events else None)
    if final is None:
        return "nothing (no canary or expansion evaluation)"
    what = final.state if final.state in ("completed", "aborted", "killed", "paused") else final.action
    return f"{what} at {final.tier_label}, {_elapsed(final.at - start)} after the rollout began"


def _utc(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")


def _elapsed(seconds: float) -> str:
    minutes, secs = divmod(int(max(0.0, seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"
