"""Fixtures of the operations tests: real `gatekeeper serve` processes (see tests/support/servers.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.servers import Server, server_pool


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """Start `gatekeeper serve` processes; every one is stopped when the test ends."""
    with server_pool(tmp_path) as start:
        yield start
