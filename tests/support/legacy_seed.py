"""Run with ed52833's `gatekeeper` first on PYTHONPATH: make its schema at URL, insert the rows read from stdin.

    python legacy_seed.py URL VERSION < rows.json

Every table of that code's models must get rows. VERSION 1 turns the outcome index back into
the full index that schema version 1 had (what that commit's own upgrade test did).
Used by tests/support/legacy.py; not a test module.
"""

from __future__ import annotations

import json
import os
import sys

from sqlalchemy import text
from sqlmodel import SQLModel

import gatekeeper
from gatekeeper.store import models  # noqa: F401 - registers the old tables
from gatekeeper.store.db import Database


def main(url: str, version: int) -> None:
    """Make the old schema and fill every table."""
    package = os.environ["PYTHONPATH"]
    assert gatekeeper.__file__ is not None and gatekeeper.__file__.startswith(package), gatekeeper.__file__
    rows = json.load(sys.stdin)
    database = Database(url)
    assert database.upgrade() == 2  # the old code's own create_all and schema_version
    tables = {table.name for table in SQLModel.metadata.sorted_tables} - {"schema_version"}
    assert set(rows) == tables, f"rows for {sorted(rows)} but the old tables are {sorted(tables)}"
    with database.engine.begin() as connection:
        for table in SQLModel.metadata.sorted_tables:
            for row in rows.get(table.name, []):
                connection.execute(table.insert().values(**row))
        if version == 1:
            connection.execute(text("DROP INDEX ix_decisions_rollout_arm_outcome"))
            connection.execute(text("CREATE INDEX ix_decisions_rollout_arm_outcome"
                                    " ON decisions (rollout_id, arm, outcome_at)"))
            connection.execute(text("UPDATE schema_version SET version = 1"))
    database.dispose()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
