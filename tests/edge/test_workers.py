"""gunicorn's refusals, written by our workers: the JSON error body with the right status."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from pathlib import Path

import pytest
import requests

from gatekeeper.api.workers import write_json_error
from gatekeeper.cli.serve import gunicorn_command
from tests.support.app import POLICIES
from tests.support.rawhttp import RawHTTP, parse
from tests.support.services import free_port


@pytest.mark.parametrize(("status", "reason", "message", "expect", "code", "field"), [
    (414, "URI Too Long", "Request Line is too large (5014 > 4094)", 414, "uri_too_long", "path"),
    (431, "Request Header Fields Too Large", "limit request headers fields size", 431,
     "request_header_fields_too_large", "headers"),
    (400, "Bad Request", "Invalid HTTP Header: 'X-\u00e9'", 400, "bad_request", None),
    (501, "Not Implemented", "Unsupported transfer coding: 'gzip'", 400, "bad_request", None),
    (500, "Internal Server Error", "", 500, "internal", None),
])
def test_refusals_are_written_as_the_json_error_body(status: int, reason: str, message: str, expect: int,
                                                     code: str, field: str | None) -> None:
    ours, theirs = socket.socketpair()
    with ours, theirs:
        write_json_error(ours, status, reason, message)
        ours.shutdown(socket.SHUT_WR)
        answer = parse(theirs.recv(65536))
    assert answer.status == expect
    assert answer.headers["content-type"] == "application/json"
    error = json.loads(answer.body)["error"]
    assert error["code"] == code and error["message"] and error.get("field") == field


@pytest.mark.parametrize("threads", [1, 2])
def test_both_worker_kinds_answer_an_oversize_request_line_with_json(threads: int, tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "GATEKEEPER_DATABASE_URL": f"sqlite:///{tmp_path / 'gk.db'}",
           "GATEKEEPER_POLICY_DIR": str(POLICIES), "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    command = gunicorn_command(bind=f"127.0.0.1:{port}", workers=1, threads=threads, timeout=30)
    worker = command[command.index("--worker-class") + 1]
    assert worker.endswith("JsonThreadWorker" if threads > 1 else "JsonSyncWorker")
    with open(tmp_path / "gunicorn.log", "wb") as log:
        server = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait_for(port)
        answer = RawHTTP("127.0.0.1", port).send("GET", "/healthz?" + "a" * 5000)
        assert answer.status == 414 and answer.headers["content-type"] == "application/json"
        assert answer.json()["error"]["code"] == "uri_too_long"
        assert RawHTTP("127.0.0.1", port).send("GET", "/healthz").status == 200
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=5)


def _wait_for(port: int) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return
        except requests.RequestException:
            time.sleep(0.1)
    raise AssertionError("gunicorn did not answer within 30 s")
