"""The SDK installs alone, so it carries its own copy of how a rehearsed fault damages a result: keep it equal."""

from __future__ import annotations

from typing import Any

import pytest
from gatekeeper_client import _chaos as client_chaos

from gatekeeper.core import chaos as server_chaos

RESULTS: list[Any] = ["refund issued", b"raw bytes!", "", [1, 2, 3, 4, 5], (1, 2, 3), {"text": "a long answer"},
                      {"a": 1, "b": 2, "c": 3}, {"nested": {"x": [1, 2]}}, 42, None, 3.5, True]


@pytest.mark.parametrize("result", RESULTS, ids=repr)
def test_the_sdk_damages_results_exactly_as_the_server_describes(result: Any) -> None:
    assert client_chaos.truncate(result) == server_chaos.truncate(result)
    assert client_chaos.garble(result) == server_chaos.garble(result)
    assert client_chaos.GARBLE_MARK == server_chaos.GARBLE_MARK
