"""`gatekeeper policy check PATH...`: validate policy files and report every problem.

Each valid file gets one summary line (name@revision, agents, tiers); each problem gets one
line `file: path: message`. Exit status: 0 when everything is valid, 1 when any problem
was found, 2 when a PATH does not exist (click's usage error).
"""

from __future__ import annotations

import click

from gatekeeper.core.policy import Policy, check_paths


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
