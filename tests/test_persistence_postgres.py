"""The persistence tests again, on a real Postgres: same API, same audit trail, same durability."""

from __future__ import annotations

import pytest

from tests.support.services import PostgresServer
from tests.test_api_rollouts import (  # noqa: F401 - collected again here, against Postgres
    test_a_new_app_on_the_same_file_sees_the_same_rollouts,
    test_history_is_paginated_newest_first,
    test_kill_reverts_and_resume_continues,
    test_refused_requests_change_nothing,
    test_twin_to_completed_and_back_through_a_rollback,
)


@pytest.fixture
def db_url(postgres: PostgresServer) -> str:
    """A fresh Postgres database per test, replacing the SQLite file of tests/conftest.py."""
    return postgres.create_database("gk_test")
