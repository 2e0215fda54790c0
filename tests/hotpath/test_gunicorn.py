"""Real `gatekeeper serve` processes: caps stay exact under 64 concurrent clients, /metrics sums every worker."""

from __future__ import annotations

import json
import re
import socket
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests
from flask import Flask

from tests.support.runtime import Runtime, assert_exact, hammer, open_sessions
from tests.support.scrape import Samples, parse, total
from tests.support.servers import Server


def scrape(url: str) -> Samples:
    """Return every sample of a /metrics scrape by (name, sorted labels)."""
    return parse(requests.get(f"{url}/metrics", timeout=10).text)


def workers_that_counted(served: Server) -> set[str]:
    """Return the pids whose metric files exist: the workers that served requests."""
    return {m.group(1) for p in Path(served.metrics_dir).glob("*.db") if (m := re.search(r"_(\d+)\.db$", p.name))}


def test_caps_are_exact_under_64_clients_on_two_workers(runtime: Runtime, app: Flask, db_url: str,
                                                        policy_dir: Path, served: Callable[..., Server]) -> None:
    plan = open_sessions(runtime)
    server = served(database_url=db_url, policy_dir=policy_dir, workers=2)
    verdicts = hammer([server.url], runtime.agent["Authorization"].removeprefix("Bearer "), plan)
    assert_exact(app, plan, verdicts)
    assert len(workers_that_counted(server)) >= 2


def test_metrics_totals_are_correct_across_workers(runtime: Runtime, db_url: str, policy_dir: Path,
                                                   served: Callable[..., Server]) -> None:
    runtime.setup("canary", 0)
    stable = runtime.session(candidate=False)["session_id"]
    server = served(database_url=db_url, policy_dir=policy_dir, workers=2)
    sent: Counter[str] = Counter()
    body = json.dumps({"session_id": stable, "tool": "search_kb", "cost": 0.01}).encode()
    # One worker reads a request whose body has not arrived yet, so the other serves the rest.
    with socket.create_connection(("127.0.0.1", int(server.url.rsplit(":", 1)[1])), timeout=30) as held:
        held.sendall(f"POST /v1/decisions HTTP/1.1\r\nHost: 127.0.0.1\r\n{_auth(runtime)}\r\n"
                     f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode())
        for tool, count in (("search_kb", 29), ("refund_payment", 6)):
            for _ in range(count):
                answer = requests.post(f"{server.url}/v1/decisions", headers=runtime.agent, timeout=10,
                                       json={"session_id": stable, "tool": tool, "cost": 0.01})
                sent[answer.json()["reason"]] += 1
        held.sendall(body)
        assert held.recv(65536).startswith(b"HTTP/1.1 200")
        sent[""] += 1
    assert sent == {"": 30, "sequence_before": 6}
    assert len(workers_that_counted(server)) == 2
    for _ in range(4):  # whichever worker answers the scrape, it reports every worker's counts
        samples = scrape(server.url)
        labels: dict[str, Any] = {"agent": "bot", "arm": "stable", "version": "v1", "stage": "canary"}
        assert total(samples, "gatekeeper_decisions_total", verdict="allow", **labels) == 30
        assert total(samples, "gatekeeper_decisions_total", reason="sequence_before", **labels) == 6
        assert total(samples, "gatekeeper_decision_duration_seconds_count") == 36
        assert total(samples, "gatekeeper_rollout_info", agent="bot", stage="canary") == 1


def _auth(runtime: Runtime) -> str:
    return f"Authorization: {runtime.agent['Authorization']}"
