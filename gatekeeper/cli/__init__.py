"""The `gatekeeper` command line. Each module adds its commands to `main`."""

from __future__ import annotations

from typing import Any

import click

from gatekeeper.cli.admin import db, token, user
from gatekeeper.cli.demo import demo
from gatekeeper.cli.ops import register_ops
from gatekeeper.cli.policy import policy
from gatekeeper.cli.scheduler import scheduler
from gatekeeper.cli.serve import serve
from gatekeeper.errors import GatekeeperError


class _Commands(click.Group):
    """A command group that reports a GatekeeperError (a bad URL, a newer schema) in one line, exit code 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except GatekeeperError as exc:
            raise click.ClickException(exc.message) from None


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Gatekeeper: staged rollouts for AI agents (twin, shadow, canary, expansion)."""


main.add_command(db)
main.add_command(token)
main.add_command(user)
main.add_command(policy)
main.add_command(scheduler)
main.add_command(serve)
main.add_command(demo)
register_ops(main)
