"""The twin's rehearsed failures: drawn from (seed, tool, call index), so a run repeats; applied to results."""

from __future__ import annotations

from collections import Counter
from types import MappingProxyType

import pytest

from gatekeeper.core.chaos import (
    NOTHING,
    Injection,
    ToolChaos,
    draw,
    garble,
    inject,
    mcp_error,
    mcp_result,
    settings_for,
    truncate,
)

MIXED = ToolChaos(error_rate=0.1, timeout_rate=0.2, partial_rate=0.05, malformed_rate=0.05, latency_s=1.5,
                  latency_rate=0.4)


def test_the_same_seed_tool_and_index_always_inject_the_same() -> None:
    runs = [[inject(MIXED, seed="s-1", tool="send_email", index=i) for i in range(1, 200)] for _ in range(2)]
    assert runs[0] == runs[1]
    assert runs[0] != [inject(MIXED, seed="s-2", tool="send_email", index=i) for i in range(1, 200)]
    assert runs[0] != [inject(MIXED, seed="s-1", tool="search_kb", index=i) for i in range(1, 200)]


def test_the_draws_follow_the_rates() -> None:
    found = [inject(MIXED, seed=f"seed-{n}", tool="send_email", index=n % 7 + 1) for n in range(20_000)]
    faults = Counter(i.fault for i in found)
    for fault, rate in (("error", 0.1), ("timeout", 0.2), ("partial", 0.05), ("malformed", 0.05), (None, 0.6)):
        assert abs(faults[fault] / len(found) - rate) < 0.015, (fault, faults)
    delayed = sum(i.delay_ms == 1500 for i in found) / len(found)
    assert abs(delayed - 0.4) < 0.015 and {i.delay_ms for i in found} == {0, 1500}
    assert 0 <= min(draw("x", "t", n, salt="fault") for n in range(1000)) < 0.01
    assert 0.99 < max(draw("x", "t", n, salt="fault") for n in range(1000)) < 1


def test_nothing_to_inject_is_null_in_the_answer() -> None:
    assert inject(None, seed="s", tool="t", index=1) is NOTHING and NOTHING.as_json() is None
    assert inject(ToolChaos(error_rate=1.0), seed="s", tool="t", index=1).as_json() == {"fault": "error",
                                                                                      "delay_ms": 0}
    assert Injection(None, 20).as_json() == {"fault": None, "delay_ms": 20}


def test_a_tools_own_entry_wins_over_its_class() -> None:
    own, by_class = ToolChaos(error_rate=1.0), ToolChaos(timeout_rate=1.0)
    chaos = MappingProxyType({"send_email": own, "irreversible": by_class})
    assert settings_for(chaos, tool="send_email", tool_class="irreversible") is own
    assert settings_for(chaos, tool="refund_payment", tool_class="irreversible") is by_class
    assert settings_for(chaos, tool="search_kb", tool_class="read_only") is None


@pytest.mark.parametrize(("result", "partial"), [
    ("abcdef", "abc"), (b"abcd", b"ab"), ([1, 2, 3], [1]), ((1, 2), (1,)), ({"a": 1, "b": 2}, {"a": 1}), (7, None),
    ({"pages": ["a", "b", "c", "d"]}, {"pages": ["a", "b"]}),
])
def test_truncate_keeps_the_first_half(result: object, partial: object) -> None:
    assert truncate(result) == partial


def test_garble_breaks_the_text_so_it_no_longer_parses() -> None:
    assert garble('{"ok": true}') == '{"ok":\ufffd{"'
    assert garble({"ok": True}) == '{"ok":\ufffd{"' and garble(b"abcd") == b"ab\xef\xbf\xbd{\""


def test_mcp_results_are_damaged_per_text_item_and_failures_are_tool_errors() -> None:
    result = {"content": [{"type": "text", "text": "abcdef"}, {"type": "image", "data": "xx"}],
              "structuredContent": {"a": 1}, "isError": False}
    assert mcp_result(result, "partial") == {"content": [{"type": "text", "text": "abc"},
                                                         {"type": "image", "data": "xx"}], "isError": False}
    assert mcp_result(result, "malformed")["content"][0]["text"] == "abc\ufffd{\""
    assert mcp_result(result, None) == result
    assert mcp_error("send_email", "timeout")["isError"] is True
    assert "may or may not have taken effect" in mcp_error("send_email", "timeout")["content"][0]["text"]
