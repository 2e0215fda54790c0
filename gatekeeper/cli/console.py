"""The `gatekeeper` group: every error a person can fix is one line on stderr and a non-zero exit.

click prints usage errors as a usage block, a hint and the error; for a command line that is
typed and scripted against, one line naming the problem (a missing variable, an unknown
command or option) is easier to read and to grep. Exit codes stay click's: 2 for usage, 1 otherwise.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import click
from click.exceptions import NoArgsIsHelpError

from gatekeeper.errors import GatekeeperError


class Console(click.Group):
    """A click group that reports errors in one line, without a traceback."""

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None,
             complete_var: str | None = None, standalone_mode: bool = True, **extra: Any) -> Any:
        """Run the command line; in standalone mode, print errors as one line and exit non-zero."""
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            result = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except NoArgsIsHelpError as exc:  # a bare group: its help, as click shows it
            fail(exc.format_message(), code=exc.exit_code)
        except click.UsageError as exc:
            where = exc.ctx.command_path if exc.ctx is not None else "gatekeeper"
            fail(f"{where}: {one_line(exc.format_message())} (see `{where} --help`)", code=exc.exit_code)
        except click.ClickException as exc:
            fail(f"gatekeeper: {one_line(exc.format_message())}", code=exc.exit_code)
        except click.Abort:
            fail("gatekeeper: aborted", code=1)
        except GatekeeperError as exc:
            fail(f"gatekeeper: {one_line(exc.message)}", code=1)
        sys.exit(result if isinstance(result, int) else 0)


def one_line(message: str) -> str:
    """Return a message folded onto one line."""
    return " ".join(message.split())


def fail(message: str, *, code: int) -> None:
    """Print one line to stderr and exit with `code`."""
    click.echo(message, err=True)
    sys.exit(code)
