"""Real `gatekeeper serve` processes: caps stay exact under 64 concurrent clients, /metrics sums every worker."""

from __future__ import annotations

import json
import re
import socket
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import requests
from flask import Flask
from prometheus_client.parser import text_string_to_metric_families

from tests.hotpath.conftest import Runtime, Served, counts, key_for

CLIENTS = 64
ROUNDS = 3  # each client asks ROUNDS times per session: demand 192 per session, far above every cap

# (arm, cost in dollars) -> calls the caps allow: canary caps 20 calls/$0.50, stable caps 60 calls/$2.00
PLAN = [("candidate", 0.01, 20), ("candidate", 0.03, 16), ("stable", 0.03, 60), ("stable", 0.07, 28)]


def open_sessions(runtime: Runtime) -> list[tuple[str, float, int]]:
    """Open the sessions of PLAN on a canary rollout; return (session id, cost, allowed calls)."""
    runtime.setup("canary", 0)
    found = []
    for index, (arm, cost, allowed) in enumerate(PLAN):
        inside = arm == "candidate"
        session = runtime.session(session_key=key_for("bot", runtime.rollout_id, 1.0, inside=inside,
                                                      start=index * 1000))
        assert session["arm"] == arm
        found.append((session["session_id"], cost, allowed))
    return found


def hammer(urls: Sequence[str], token: str, plan: list[tuple[str, float, int]]) -> Counter[tuple[str, str]]:
    """Run CLIENTS threads that all ask for every session's calls at once; count (session, verdict)."""
    verdicts: Counter[tuple[str, str]] = Counter()
    errors: list[str] = []
    lock, start = threading.Lock(), threading.Barrier(CLIENTS)

    def client(number: int) -> None:
        http = requests.Session()
        http.headers["Authorization"] = f"Bearer {token}"
        url = urls[number % len(urls)]
        start.wait(timeout=30)
        for _ in range(ROUNDS):
            for session, cost, _allowed in plan:
                answer = http.post(f"{url}/v1/decisions", json={"session_id": session, "tool": "search_kb",
                                                               "cost": cost}, timeout=30)
                with lock:
                    if answer.status_code != 200:
                        errors.append(f"{answer.status_code} {answer.text[:200]}")
                    else:
                        verdicts[(session, answer.json()["verdict"])] += 1

    threads = [threading.Thread(target=client, args=(n,)) for n in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors[:5]
    return verdicts


def assert_exact(app: Flask, plan: list[tuple[str, float, int]], verdicts: Counter[tuple[str, str]]) -> None:
    """Allowed calls and reserved spend equal the caps' share exactly, in the answers and in the database."""
    for session, cost, allowed in plan:
        assert verdicts[(session, "allow")] == allowed, (cost, verdicts)
        assert verdicts[(session, "deny")] == CLIENTS * ROUNDS - allowed
        row = counts(app, "SELECT tool_calls, spend_micros FROM sessions WHERE id = :id", id=session)
        assert tuple(row) == (allowed, round(allowed * cost * 1_000_000))
        stored = counts(app, "SELECT count(*), sum(cost_micros) FROM decisions WHERE session_id = :id"
                             " AND verdict = 'allow'", id=session)
        assert tuple(stored) == (allowed, row[1])


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Return every sample of a /metrics scrape by (name, sorted labels)."""
    text = requests.get(f"{url}/metrics", timeout=10).text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def total(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    """Sum the samples of `name` whose labels include `labels`."""
    return sum(value for (found, keys), value in samples.items()
               if found == name and set(labels.items()) <= set(keys))


def workers_that_counted(served: Served) -> set[str]:
    """Return the pids whose metric files exist: the workers that served requests."""
    return {m.group(1) for p in Path(served.metrics_dir).glob("*.db") if (m := re.search(r"_(\d+)\.db$", p.name))}


def test_caps_are_exact_under_64_clients_on_two_workers(runtime: Runtime, app: Flask, db_url: str,
                                                        policy_dir: Path, served: Callable[..., Served]) -> None:
    plan = open_sessions(runtime)
    server = served(database_url=db_url, policy_dir=policy_dir, workers=2)
    verdicts = hammer([server.url], runtime.agent["Authorization"].removeprefix("Bearer "), plan)
    assert_exact(app, plan, verdicts)
    assert len(workers_that_counted(server)) >= 2


def test_metrics_totals_are_correct_across_workers(runtime: Runtime, db_url: str, policy_dir: Path,
                                                   served: Callable[..., Served]) -> None:
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
