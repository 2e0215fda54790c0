"""`python -m gatekeeper.cli`: the same as the `gatekeeper` command."""

from gatekeeper.cli import main

main()
