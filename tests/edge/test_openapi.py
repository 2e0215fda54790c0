"""`/openapi.json` is true: every route, lists as arrays, `Allow` on 405, and schemathesis finds nothing.

The schemathesis run (`--checks all`) goes against a real `gatekeeper serve` (gunicorn, 2 workers)
on SQLite and on Postgres, once with an agent token and once with a release manager's, with the
seeded agent, session, decision and approval as path parameters so that requests reach the code.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.support.edge import AGENT, Target

MAX_EXAMPLES = 12
SECONDS_PER_RUN = 15
# Schema-valid bodies that cross-field rules refuse with a 400 the schema cannot say: a scenario
# outside a twin session, an agent its policy does not bind.
CROSS_FIELD_RULES = [("/v1/sessions", "POST"), ("/v1/agents", "POST"),
                     ("/v1/tokens/{token_id}/revoke", "POST"),  # the seeded token is revoked already: 409
                     ("/v1/sessions/{session_id}/scenario", "POST")]  # a tool outside the policy: 400; taken: 409
# Routes added after the battery was written (issue 12): each must be in the document.
LATER_ROUTES = [("/v1/agents/{agent}/stable", "post"), ("/v1/tokens", "get"), ("/v1/tokens", "post"),
                ("/v1/tokens/{token_id}/revoke", "post"), ("/v1/scheduler", "get"),
                ("/v1/sessions/{session_id}", "get"), ("/v1/sessions/{session_id}/scenario", "post")]


def test_every_route_is_documented(app: Flask, client: FlaskClient) -> None:
    paths = client.get("/openapi.json").get_json()["paths"]
    for rule in app.url_map.iter_rules():
        if rule.endpoint.startswith("web.") or rule.endpoint == "static":
            continue  # the dashboard's HTML pages are not part of the JSON API
        path = rule.rule.replace("<", "{").replace(">", "}")
        for method in (rule.methods or set()) - {"HEAD", "OPTIONS"}:
            assert method.lower() in paths.get(path, {}), f"{method} {path} is not in /openapi.json"
    for path in ("/metrics", "/healthz", "/readyz", "/openapi.json"):
        assert "get" in paths[path]
    assert "text/plain" in str(paths["/metrics"]["get"]["responses"]["200"]["content"])


def test_the_later_routes_and_decision_fields_are_documented(client: FlaskClient) -> None:
    document = client.get("/openapi.json").get_json()
    for path, method in LATER_ROUTES:
        operation = document["paths"].get(path, {}).get(method)
        assert operation and {"200", "201"} & set(operation["responses"]), f"{method} {path} is not documented"
    fields = document["components"]["schemas"]["DecisionCreate"]["properties"]
    assert {"type": "object", "additionalProperties": True} in fields["arguments"]["anyOf"]
    request_id = fields["request_id"]["anyOf"][0]
    assert (request_id["minLength"], request_id["maxLength"], request_id["pattern"]) == (1, 100, "^[\\x20-\\x7e]+$")


def test_list_routes_are_arrays(client: FlaskClient) -> None:
    paths = client.get("/openapi.json").get_json()["paths"]
    for path, model in (("/v1/agents", "AgentStatus"), ("/v1/approvals", "ApprovalView")):
        schema = paths[path]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
        assert schema == {"type": "array", "items": {"$ref": f"#/components/schemas/{model}"}}


def test_a_body_of_optional_fields_is_optional(client: FlaskClient) -> None:
    paths = client.get("/openapi.json").get_json()["paths"]
    assert paths["/v1/approvals/{approval_id}/approve"]["post"]["requestBody"]["required"] is False
    assert paths["/v1/agents/{agent}/pause"]["post"]["requestBody"]["required"] is True


def test_405_names_the_allowed_methods(client: FlaskClient, rm: dict[str, str]) -> None:
    for method, path in (("put", "/v1/agents"), ("delete", "/v1/agents/bot"), ("get", "/v1/decisions")):
        answer = getattr(client, method)(path, headers=rm)
        assert answer.status_code == 405
        assert answer.headers["Allow"], path
        assert answer.get_json()["error"]["code"] == "method_not_allowed"
    assert set(client.put("/v1/agents").headers["Allow"].split(", ")) >= {"GET", "POST"}


@pytest.mark.slow
def test_schemathesis_finds_no_server_error_and_no_nonconformance(target: Target, tmp_path: Path) -> None:
    if importlib.util.find_spec("schemathesis") is None:
        pytest.fail("schemathesis is not installed: pip install -e '.[dev]'")
    config = tmp_path / "schemathesis.toml"
    config.write_text(_config(target))
    for role in ("agent", "release_manager"):
        done = subprocess.run(
            [sys.executable, "-m", "schemathesis.cli", "--config-file", str(config), "run",
             f"{target.url}/openapi.json", "--checks", "all",
             "--max-examples", str(MAX_EXAMPLES), "--max-time", str(SECONDS_PER_RUN), "--seed", "12",
             "--phases", "coverage,fuzzing,stateful", "--workers", "1", "--no-shrink",
             "-H", f"Authorization: Bearer {target.tokens[role]}"],
            capture_output=True, text=True, timeout=SECONDS_PER_RUN * 4, check=False,
            env={**os.environ, "SCHEMATHESIS_TELEMETRY": "false", "NO_COLOR": "1"}, cwd=tmp_path)
        assert done.returncode == 0, f"schemathesis as {role}:\n{done.stdout[-6000:]}\n{done.stderr[-2000:]}"
        assert " passed" in done.stdout and "generated" in done.stdout, done.stdout[-2000:]


def _config(target: Target) -> str:
    lines = ['[parameters]', f'"path.agent" = "{AGENT}"', f'"path.approval_id" = "{target.ids["approval"]}"',
             f'"path.decision_id" = "{target.ids["decision"]}"', f'"path.session_id" = "{target.ids["session"]}"',
             f'"path.token_id" = "{target.ids["token"]}"']
    for path, method in CROSS_FIELD_RULES:
        lines += ["", "[[operations]]", f'include-path = "{path}"', f'include-method = "{method}"',
                  'checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "401", "403", "404", "409"]']
    return "\n".join(lines) + "\n"

