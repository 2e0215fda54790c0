"""The `gatekeeper` command line. Each module adds its commands to `main`."""

from __future__ import annotations

import click

from gatekeeper.cli.admin import db, token, user
from gatekeeper.cli.console import Console
from gatekeeper.cli.demo import demo
from gatekeeper.cli.gateway import gateway
from gatekeeper.cli.lifecycle import register_lifecycle
from gatekeeper.cli.ops import register_ops
from gatekeeper.cli.policy_commands import policy
from gatekeeper.cli.prune import db_prune
from gatekeeper.cli.scenario import scenario
from gatekeeper.cli.scheduler import scheduler
from gatekeeper.cli.serve import serve
from gatekeeper.cli.session_commands import sessions


@click.group(cls=Console, context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Gatekeeper: staged rollouts for AI agents (twin, shadow, canary, expansion)."""


db.add_command(db_prune)
main.add_command(db)
main.add_command(token)
main.add_command(user)
main.add_command(policy)
main.add_command(scheduler)
main.add_command(serve)
main.add_command(demo)
main.add_command(gateway)
main.add_command(scenario)
main.add_command(sessions)
register_ops(main)
register_lifecycle(main)
