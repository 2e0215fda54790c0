"""`serve --with-scheduler` replicas keep one leader and stop their schedulers with them (issue 11 §2)."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.support.servers import Server, prepare_database
from tests.support.test_services import wait_for

PASSWORD = "correct horse battery"



def scheduler_view(server: Server, token: str) -> dict[str, Any]:
    answer = requests.get(f"{server.url}/v1/scheduler", headers={"Authorization": f"Bearer {token}"}, timeout=5)
    assert answer.status_code == 200, answer.text
    found: dict[str, Any] = answer.json()
    return found


def _parent_of(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])


def _pid_of(holder: str) -> int:
    return int(holder.split(":")[1])


@pytest.mark.slow
def test_serve_with_scheduler_replicas_have_one_leader_and_stop_their_schedulers(
        tmp_path: Path, servers: Callable[..., Server]) -> None:
    url = f"sqlite:///{tmp_path / 'gk.db'}"
    token = prepare_database(url, tokens=["viewer"])["viewer"]
    args = ["--with-scheduler", "--scheduler-interval", "1s"]
    first, second = servers(database_url=url, args=args), servers(database_url=url, args=args)
    view = wait_for(lambda: (v := scheduler_view(first, token))["healthy"] and v, timeout=20, what="a leader")
    leader = view["leader"]
    time.sleep(3)
    assert scheduler_view(second, token)["leader"] == leader  # the same one, seen from both replicas
    logs = [s.log.read_text() for s in (first, second)]
    assert sum(len(re.findall(r"scheduler \S+ leads", text)) for text in logs) == 1, logs
    owner = first if _parent_of(_pid_of(leader)) == first.process.pid else second
    other = second if owner is first else first
    assert _parent_of(_pid_of(leader)) == owner.process.pid

    owner.stop()
    wait_for(lambda: _parent_of(_pid_of(leader)) is None, timeout=5, what="the scheduler to stop with its server")
    taken = wait_for(lambda: (v := scheduler_view(other, token))["leader"] not in (None, leader) and v,
                       timeout=15, what="the other replica's scheduler to take over")
    assert _parent_of(_pid_of(taken["leader"])) == other.process.pid
    other.stop()
    wait_for(lambda: _parent_of(_pid_of(taken["leader"])) is None, timeout=5, what="the last scheduler to stop")
    assert not os.path.exists(f"/proc/{other.process.pid}")
