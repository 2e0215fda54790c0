"""The scheduler: one leader through the lease (and Postgres advisory lock), even with two processes."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from gatekeeper.cli import main
from gatekeeper.core.tier_gate import TierSignals
from gatekeeper.metric_sources import InMemorySource
from gatekeeper.scheduler import GateScheduler, SchedulerLease
from gatekeeper.services import Services
from gatekeeper.store.models import GateEvaluation, Notification
from tests.support.gates import T0, place, rollout_of, rows

HEALTHY = TierSignals(sessions=50, tool_calls=500, errors=0, p95_latency_s=0.2, spend_dollars=1.0)


def test_lease_has_one_holder_until_it_expires_or_is_released(services: Services) -> None:
    a = SchedulerLease(services.db, holder="a", ttl_s=10)
    b = SchedulerLease(services.db, holder="b", ttl_s=10)
    assert [a.acquire(now=T0), b.acquire(now=T0 + 1), a.acquire(now=T0 + 5), b.acquire(now=T0 + 14)] == [
        True, False, True, False]
    assert b.acquire(now=T0 + 15.1)  # a stopped renewing: its lease ran out at T0 + 15
    assert not a.acquire(now=T0 + 16)
    b.release()
    assert a.acquire(now=T0 + 17)


def test_a_tick_acts_only_as_leader(services: Services) -> None:
    place(services)
    source = InMemorySource({("bot", "v2"): HEALTHY})
    clock = iter([T0, T0 + 1, T0 + 1, T0 + 2, T0 + 2, T0 + 2])
    leader = GateScheduler(services, source, interval_s=1, holder="leader", clock=lambda: next(clock))
    standby = GateScheduler(services, source, interval_s=1, holder="standby", clock=lambda: T0 + 1.5)
    first = leader.tick()
    assert first.leader and [o.transition for o in first.outcomes] == ["promote"]
    assert not standby.tick().leader
    assert rollout_of(services).tier == 1
    assert first.delivered == len(rows(services, Notification))  # the outbox drained by the same tick


def test_scheduler_once_from_the_command_line(services: Services, monkeypatch: pytest.MonkeyPatch) -> None:
    place(services)
    monkeypatch.setenv("GATEKEEPER_DATABASE_URL", services.settings.database_url)
    monkeypatch.setenv("GATEKEEPER_POLICY_DIR", str(services.settings.policy_dir))
    result = CliRunner().invoke(main, ["scheduler", "--once", "--interval", "1s"])
    assert result.exit_code == 0, result.output
    assert "bot: canary tier 0: hold -> hold" in result.output  # the built-in source saw no sessions yet
    assert "too few sessions" in rollout_of(services).state_reason


def test_on_postgres_the_advisory_lock_keeps_a_second_leader_out(postgres_services: Services) -> None:
    postgres = postgres_services.db
    a = SchedulerLease(postgres, holder="a", ttl_s=10)
    b = SchedulerLease(postgres, holder="b", ttl_s=10)
    assert a.acquire(now=T0) and not b.acquire(now=T0 + 1)
    assert not b.acquire(now=T0 + 60)  # the lease row expired, but a still holds the advisory lock
    a.lock.release()  # a's database session ends, as when its process dies (its lease row is stale)
    assert b.acquire(now=T0 + 61) and not a.acquire(now=T0 + 62)
    b.release()
    assert a.acquire(now=T0 + 63)
    a.release()


def spawn(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-c", "from gatekeeper.cli import main; main()", "scheduler",
               "--interval", "0.25", "--lease-ttl", "3"]
    with open(log, "wb") as out:
        return subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def leads(log: Path) -> bool:
    return bool(re.search(r"scheduler \S+ leads", log.read_text()))


def wait_until(condition: Callable[[], bool], *, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_two_scheduler_processes_one_leader_and_a_takeover(services: Services, tmp_path: Path) -> None:
    place(services)
    env = {**os.environ, "GATEKEEPER_DATABASE_URL": services.settings.database_url,
           "GATEKEEPER_POLICY_DIR": str(services.settings.policy_dir)}
    logs = [tmp_path / "first.log", tmp_path / "second.log"]
    processes = [spawn(env, logs[0]), spawn(env, logs[1])]
    try:
        wait_until(lambda: any(leads(log) for log in logs), timeout=20, what="a leader")
        wait_until(lambda: len(rows(services, GateEvaluation)) >= 3, timeout=20, what="three evaluations")
        assert [leads(log) for log in logs].count(True) == 1, [log.read_text() for log in logs]
        leader = 0 if leads(logs[0]) else 1
        stop(processes[leader])  # a clean stop gives the lease up
        wait_until(lambda: leads(logs[1 - leader]), timeout=10, what="the standby to take over")
        seen = len(rows(services, GateEvaluation))
        wait_until(lambda: len(rows(services, GateEvaluation)) > seen, timeout=10, what="evaluations to go on")
    finally:
        for process in processes:
            stop(process)
    windows = [e.window_key for e in rows(services, GateEvaluation)]
    assert len(windows) == len(set(windows))  # never two evaluations of one window
