"""Alembic's environment: run the migrations on the connection that `gatekeeper.store.schema` hands over.

Gatekeeper opens the transaction (and holds the upgrade lock) itself, so this file neither builds an
engine nor reads alembic.ini; run migrations with `gatekeeper db upgrade`, write one with
`gatekeeper db revision -m "what changed"`.
"""

from __future__ import annotations

from typing import Any

from alembic import context
from sqlmodel import SQLModel

from gatekeeper.store import models  # noqa: F401 - registers every table on SQLModel.metadata
from gatekeeper.store.schema import render_item


def _skip_empty(_context: Any, _revision: Any, directives: list[Any]) -> None:
    """Write no revision when the models and head agree."""
    if directives and directives[0].upgrade_ops.is_empty():
        directives[:] = []


connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through `gatekeeper db upgrade`, not the alembic command")
context.configure(connection=connection, target_metadata=SQLModel.metadata, compare_type=True,
                  render_as_batch=True, render_item=render_item, process_revision_directives=_skip_empty)
with context.begin_transaction():
    context.run_migrations()
