"""Each real-service helper starts its binary, answers, and stops cleanly."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest
import sqlalchemy
from sqlalchemy.pool import NullPool

from tests.support.http import LoopbackHTTPServer, RecordedRequest
from tests.support.services import AlertmanagerServer, PostgresServer, PrometheusServer, require_binary

T = TypeVar("T")


def wait_for(probe: Callable[[], T | None], *, timeout: float = 20.0, what: str) -> T:
    """Poll ``probe`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := probe():
            return result
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def port_is_open(port: int) -> bool:
    """Return True when something accepts TCP connections on 127.0.0.1:port."""
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def metrics(request: RecordedRequest) -> tuple[int, str, bytes]:
    """Answer like a tiny exporter."""
    return 200, "text/plain; version=0.0.4", b"# TYPE demo_answer gauge\ndemo_answer 42\n"


def test_postgres_serves_the_gatekeeper_database(tmp_path: Path) -> None:
    with PostgresServer(tmp_path) as postgres:
        assert postgres.url.startswith("postgresql+psycopg://postgres@127.0.0.1:")
        engine = sqlalchemy.create_engine(postgres.url, poolclass=NullPool)
        with engine.connect() as connection:
            assert connection.execute(sqlalchemy.text("select 1")).scalar() == 1
            assert connection.execute(sqlalchemy.text("select current_database()")).scalar() == "gatekeeper"
            assert connection.execute(sqlalchemy.text("show max_connections")).scalar() == "200"
        engine.dispose()
        port = postgres.port
    assert port is not None and not port_is_open(port)


def test_prometheus_scrapes_and_keeps_port_and_data_across_restart(tmp_path: Path) -> None:
    with LoopbackHTTPServer(metrics) as exporter, PrometheusServer(
        tmp_path, scrape_targets=[exporter.target]
    ) as prometheus:
        up = wait_for(lambda: prometheus.query("up == 1"), what="a successful scrape")
        assert up[0]["metric"]["instance"] == exporter.target
        scraped_at = float(up[0]["value"][0])
        port = prometheus.port

        prometheus.stop()
        assert not port_is_open(port or 0)
        prometheus.start()

        assert prometheus.port == port
        # The sample from before the restart is still there: same data dir.
        assert prometheus.query("demo_answer", at=scraped_at)[0]["value"][1] == "42"
        assert any(request.path == "/metrics" for request in exporter.requests)


def test_alertmanager_delivers_alerts_to_the_webhook_with_the_bearer_token(tmp_path: Path) -> None:
    with LoopbackHTTPServer() as receiver, AlertmanagerServer(
        tmp_path, webhook_url=f"{receiver.url}/v1/alerts", bearer_token="s3cret-token"
    ) as alertmanager:
        alertmanager.post_alerts([{
            "labels": {"alertname": "GatekeeperCandidateErrorRateHigh", "agent": "support-bot",
                       "severity": "warning"},
            "annotations": {"summary": "test alert"},
        }])
        delivered = wait_for(lambda: [r for r in receiver.requests if r.method == "POST"],
                             what="the webhook delivery")

    assert delivered[0].path == "/v1/alerts"
    assert delivered[0].headers["Authorization"] == "Bearer s3cret-token"
    payload = json.loads(delivered[0].body)
    assert payload["version"] == "4" and payload["status"] == "firing"
    assert payload["alerts"][0]["labels"]["agent"] == "support-bot"


def test_a_missing_binary_skips_loudly_or_fails_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="MISSING TEST DEPENDENCY.*apt-get install"):
        require_binary("gatekeeper-no-such-binary")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="gatekeeper-no-such-binary"):
        require_binary("gatekeeper-no-such-binary")
