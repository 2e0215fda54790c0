"""The bounds of every input, checked in-process on SQLite and on Postgres.

Bounds match the columns the values land in; extreme but valid values (offset 2**31-1, the years
1 and 9999, naive or aware) are answered, one past them is a 400 naming the field; the bearer
scheme is case-insensitive; the edge guard refuses NUL and non-UTF-8 bytes wherever they hide.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from annotated_types import MaxLen
from flask import Flask
from flask.testing import FlaskClient
from pydantic import BaseModel
from sqlmodel import SQLModel

from gatekeeper.api.alerts import AlertmanagerAlert
from gatekeeper.api.auth import bearer_token
from gatekeeper.api.fields import INT_MAX, nul_free_json
from gatekeeper.api.guard import refusal
from gatekeeper.api.runtime_schemas import ApprovalAction, DecisionCreate, SessionCreate
from gatekeeper.api.schemas import ActionBody, AgentCreate, PromoteBody, RollbackBody, RolloutCreate, StableBody
from gatekeeper.api.tokens import TokenCreate
from gatekeeper.core.budgets import MAX_COST_DOLLARS
from gatekeeper.errors import Unauthorized
from gatekeeper.store.models import (
    Agent,
    AgentSession,
    AlertReceipt,
    ApiToken,
    Approval,
    Decision,
    Rollout,
    StableChange,
    Transition,
)
from tests.support.runtime import counts
from tests.support.services import PostgresServer

# (request model, field, the columns its value lands in, whether the bound must equal the narrowest one)
LANDS_IN: list[tuple[type[BaseModel], str, list[tuple[type[SQLModel], str]], bool]] = [
    (ActionBody, "reason", [(Rollout, "state_reason"), (Transition, "reason")], True),
    (PromoteBody, "reason", [(Rollout, "state_reason"), (Transition, "reason")], True),
    (RollbackBody, "reason", [(Rollout, "state_reason"), (Transition, "reason")], True),
    (RolloutCreate, "reason", [(Rollout, "state_reason"), (Transition, "reason")], True),
    (ApprovalAction, "reason", [(Approval, "decision_reason")], True),
    (AgentCreate, "policy", [(Agent, "policy")], True),
    (SessionCreate, "session_key", [(AgentSession, "session_key")], True),
    (SessionCreate, "scenario", [(AgentSession, "scenario")], True),
    (DecisionCreate, "preview", [(Decision, "preview"), (Approval, "preview")], False),
    (DecisionCreate, "session_id", [(AgentSession, "id")], True),
    (DecisionCreate, "approval_id", [(Decision, "approval_id")], True),
    (StableBody, "reason", [(StableChange, "reason")], True),
    (TokenCreate, "name", [(ApiToken, "name")], True),
    (DecisionCreate, "request_id", [(Decision, "request_id")], True),
    (AlertmanagerAlert, "fingerprint", [(AlertReceipt, "fingerprint")], True),
    (AlertmanagerAlert, "startsAt", [(AlertReceipt, "starts_at")], True),
]


@pytest.mark.parametrize(("model", "name", "columns", "equal"), LANDS_IN,
                         ids=[f"{m.__name__}.{n}" for m, n, _, _ in LANDS_IN])
def test_string_bounds_fit_their_columns(model: type[BaseModel], name: str,
                                         columns: list[tuple[type[SQLModel], str]], equal: bool) -> None:
    bound = _max_length(model, name)
    narrowest = min(table.__table__.c[column].type.length for table, column in columns)  # type: ignore[attr-defined]
    assert bound == narrowest if equal else bound <= narrowest, (bound, narrowest)


def _max_length(model: type[BaseModel], name: str) -> int:
    info = model.model_fields[name]
    found = [m.max_length for m in info.metadata if isinstance(m, MaxLen)]
    assert found, f"{model.__name__}.{name} has no maximum length"
    return min(found)


@pytest.mark.parametrize(("header", "token"), [
    ("Bearer gk_abc", "gk_abc"), ("bearer gk_abc", "gk_abc"), ("BEARER gk_abc", "gk_abc"),
    ("bEaReR   gk_abc  ", "gk_abc"), ("Bearer a.b-c_d~e+f/g==", "a.b-c_d~e+f/g=="),
])
def test_the_bearer_scheme_is_case_insensitive(header: str, token: str) -> None:
    assert bearer_token(header) == token


@pytest.mark.parametrize("header", [None, "", "Bearer", "Bearer ", "Basic abc", "Token gk_abc", "Bearer a b",
                                    "Bearer\tgk_abc", "Bearer gk_\x00", "Bearer gk_é", "Bearer " + "a" * 513,
                                    "Bearer =abc", 'Bearer "gk_abc"'])
def test_a_malformed_authorization_header_is_a_401(header: str | None) -> None:
    with pytest.raises(Unauthorized) as caught:
        bearer_token(header)
    assert caught.value.field == "authorization"


@pytest.mark.parametrize(("environ", "field"), [
    ({"PATH_INFO": "/v1/agents/a\x00"}, "path"),
    ({"PATH_INFO": "/v1/agents/\xff\xfe"}, "path"),
    ({"PATH_INFO": "/v1/agents", "QUERY_STRING": "offset=%00"}, "query"),
    ({"PATH_INFO": "/v1/agents", "QUERY_STRING": "kind=%C3%28"}, "query"),
    ({"PATH_INFO": "/v1/agents", "QUERY_STRING": "a\x00=1"}, "query"),
    ({"PATH_INFO": "/v1/agents", "HTTP_X_TRACE": "a\x00b"}, "x-trace"),
    ({"PATH_INFO": "/v1/agents", "HTTP_AUTHORIZATION": "Bearer \x00"}, "authorization"),
])
def test_the_guard_refuses_nul_and_non_utf8(environ: dict[str, Any], field: str) -> None:
    problem = refusal(environ)
    assert problem is not None and problem.status == 400 and problem.field == field


@pytest.mark.parametrize("value", [{"a\x00": 1}, {"a": "b\x00"}, {"a": [1, {"b": ["\x00"]}]}, ["\x00"]])
def test_nul_free_json_finds_a_nul_at_any_depth(value: Any) -> None:
    with pytest.raises(ValueError, match="NUL"):
        nul_free_json(value)
    assert nul_free_json({"a": [1, {"b": "c", "d": None}], "e": 1.5}) == {"a": [1, {"b": "c", "d": None}], "e": 1.5}


def test_the_guard_lets_utf8_through() -> None:
    utf8_path = "/v1/agents/é".encode().decode("latin-1")  # how a WSGI server hands over UTF-8 bytes
    assert refusal({"PATH_INFO": utf8_path, "QUERY_STRING": "kind=%C3%A9&x=a+b", "HTTP_X": "\xe9"}) is None


# -- against the real app, on SQLite and on Postgres ---------------------------------------------------


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Any) -> str:
    """The app's database: a SQLite file, then a fresh Postgres database."""
    if request.param == "postgres":
        postgres: PostgresServer = request.getfixturevalue("postgres")
        return postgres.create_database("gk_bounds")
    return f"sqlite:///{tmp_path / 'gatekeeper.db'}"


@pytest.fixture
def twin_agent(client: FlaskClient, rm: dict[str, str], make_token: Callable[..., dict[str, str]]
               ) -> dict[str, str]:
    """Register support-bot with a rollout at twin; return an agent token's headers."""
    assert client.post("/v1/agents", json={"name": "support-bot", "policy": "support-default",
                                           "stable_version": "v1"}, headers=rm).status_code == 201
    assert client.post("/v1/agents/support-bot/rollouts", json={"version": "v2"}, headers=rm).status_code == 201
    return make_token("agent", agent="support-bot", name="bot")


@pytest.mark.parametrize(("sent", "stored"), [
    ("0001-01-01T00:00:00", datetime(1, 1, 1, tzinfo=UTC)),
    ("0001-01-01T00:00:00Z", datetime(1, 1, 1, tzinfo=UTC)),
    ("0001-01-01T00:00:00-05:00", datetime(1, 1, 1, 5, tzinfo=UTC)),
    ("9999-12-31T23:59:59.999999", datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)),
    ("9999-12-31T23:59:59+05:00", datetime(9999, 12, 31, 18, 59, 59, tzinfo=UTC)),
    ("2026-06-01T12:00:00+02:00", datetime(2026, 6, 1, 10, tzinfo=UTC)),
])
def test_timestamps_of_any_year_are_stored_in_utc(app: Flask, client: FlaskClient, twin_agent: dict[str, str],
                                                   sent: str, stored: datetime) -> None:
    answer = client.post("/v1/sessions", json={"agent": "support-bot", "environment": "twin",
                                               "twin_snapshot_at": sent}, headers=twin_agent)
    assert answer.status_code == 201, answer.get_json()
    row = counts(app, "SELECT twin_snapshot_at FROM sessions WHERE id = :id", id=answer.get_json()["session_id"])
    assert row[0] == pytest.approx(stored.timestamp(), abs=1e-3)


@pytest.mark.parametrize("sent", ["0001-01-01T00:00:00+00:01", "9999-12-31T23:59:59-00:01", "0000-12-31T00:00:00",
                                  "10000-01-01T00:00:00", "2026-02-30T00:00:00", "now", 1700000000])
def test_timestamps_out_of_range_are_a_400_naming_the_field(client: FlaskClient, twin_agent: dict[str, str],
                                                             sent: Any) -> None:
    answer = client.post("/v1/sessions", json={"agent": "support-bot", "environment": "twin",
                                               "twin_snapshot_at": sent}, headers=twin_agent)
    assert answer.status_code == 400
    assert answer.get_json()["error"]["field"] == "twin_snapshot_at"


def test_offsets_up_to_the_bound_are_answered_and_past_it_refused(client: FlaskClient, twin_agent: dict[str, str],
                                                                  rm: dict[str, str]) -> None:
    history = "/v1/agents/support-bot/history"
    answer = client.get(f"{history}?offset={INT_MAX}&limit=500", headers=rm)
    assert answer.status_code == 200 and answer.get_json()["items"] == []
    for query, name in ((f"offset={INT_MAX + 1}", "offset"), (f"offset={2**63}", "offset"),
                        ("offset=100000000000000000000", "offset"), ("limit=501", "limit"), ("offset=-1", "offset")):
        refused = client.get(f"{history}?{query}", headers=rm)
        assert refused.status_code == 400, query
        assert refused.get_json()["error"]["field"] == name


def test_money_up_to_the_apis_bound_is_stored_exactly(app: Flask, client: FlaskClient,
                                                      twin_agent: dict[str, str]) -> None:
    """$10,000 is 10^10 micro-dollars: past 32 bits, which Postgres once answered with a 500."""
    session = client.post("/v1/sessions", json={"agent": "support-bot", "environment": "twin"}, headers=twin_agent)
    session_id = session.get_json()["session_id"]
    verdicts = []
    for tool in ("search_kb", "send_email"):  # read-only: past the cap; irreversible: also asks a person in twin
        answer = client.post("/v1/decisions", json={"session_id": session_id, "tool": tool, "cost": MAX_COST_DOLLARS},
                             headers=twin_agent)
        assert answer.status_code == 200, answer.get_json()
        verdicts.append(answer.get_json()["verdict"])
    assert verdicts == ["deny", "deny"]
    stored = counts(app, "SELECT COUNT(*), MIN(cost_micros), MAX(cost_micros) FROM decisions WHERE session_id = :id",
                    id=session_id)
    assert tuple(stored) == (2, 10_000_000_000, 10_000_000_000)


def test_a_nul_anywhere_in_a_body_is_a_400_naming_the_field(client: FlaskClient, twin_agent: dict[str, str],
                                                            rm: dict[str, str]) -> None:
    cases = [("/v1/sessions", twin_agent, {"agent": "support-bot", "session_key": "a\x00"}, "session_key"),
             ("/v1/agents/support-bot/pause", rm, {"reason": "\x00"}, "reason"),
             ("/v1/agents", rm, {"name": "x", "policy": "support\x00default"}, "policy")]
    for path, headers, body, name in cases:
        answer = client.post(path, json=body, headers=headers)
        assert answer.status_code == 400, path
        error = answer.get_json()["error"]
        assert error["field"] == name and "NUL" in error["message"], error


def test_a_nul_in_an_alert_label_name_is_refused_without_echoing_it(client: FlaskClient,
                                                                    make_token: Callable[..., dict[str, str]]) -> None:
    alert = {"status": "firing", "labels": {"agent\x00": "support-bot"}, "startsAt": "2026-01-01T00:00:00Z"}
    answer = client.post("/v1/alerts", json={"version": "4", "alerts": [alert]}, headers=make_token("alertmanager"))
    assert answer.status_code == 400
    error = answer.get_json()["error"]
    assert "\x00" not in error["field"] and "\x00" not in error["message"]
    assert error["field"].startswith("alerts.0.labels.")


@pytest.mark.parametrize("arguments", [{"a\x00": 1}, {"a": "b\x00"}, {"a": [{"b": {"c": ["ok", "\x00"]}}]}])
def test_a_nul_anywhere_in_arguments_is_a_400_and_reserves_nothing(app: Flask, client: FlaskClient,
                                                                  twin_agent: dict[str, str],
                                                                  arguments: dict[str, Any]) -> None:
    session = client.post("/v1/sessions", json={"agent": "support-bot", "environment": "twin"}, headers=twin_agent)
    session_id = session.get_json()["session_id"]
    answer = client.post("/v1/decisions", json={"session_id": session_id, "tool": "search_kb", "cost": 0.01,
                                                "arguments": arguments}, headers=twin_agent)
    assert answer.status_code == 400
    error = answer.get_json()["error"]
    assert error["field"] == "arguments" and "NUL" in error["message"] and "\x00" not in error["message"], error
    assert tuple(counts(app, "SELECT COUNT(*) FROM decisions WHERE session_id = :id", id=session_id)) == (0,)


@pytest.mark.parametrize("token_id", ["²", "１", "٣", " 1", "1 ", "+1", "0x1", "1_0", str(INT_MAX + 1), "9" * 4000])
def test_a_token_id_is_ascii_digits_within_int_range(app: Flask, client: FlaskClient, rm: dict[str, str],
                                                     make_token: Callable[..., dict[str, str]], token_id: str) -> None:
    """`str.isdigit` takes "²" (int() refuses it: a 500) and "１" or "٣" (int() reads 1 and 3: the wrong token)."""
    for role in ("viewer", "alertmanager"):
        make_token(role)
    answer = client.post(f"/v1/tokens/{token_id}/revoke", headers=rm)
    assert answer.status_code == 404, answer.get_json()
    assert answer.get_json()["error"]["field"] == "token_id"
    assert tuple(counts(app, "SELECT COUNT(*) FROM tokens WHERE revoked_at IS NOT NULL")) == (0,)


def test_arguments_of_exactly_16_kib_are_stored_and_one_byte_more_refused(app: Flask, client: FlaskClient,
                                                                         twin_agent: dict[str, str]) -> None:
    session = client.post("/v1/sessions", json={"agent": "support-bot", "environment": "twin"}, headers=twin_agent)
    body = {"session_id": session.get_json()["session_id"], "tool": "search_kb", "cost": 0.01}
    fits = {"a": "é" * 4 + "a" * (16 * 1024 - 8 - 8)}  # canonical JSON is UTF-8: each "é" is 2 bytes
    answer = client.post("/v1/decisions", json={**body, "arguments": fits}, headers=twin_agent)
    assert answer.status_code == 200, answer.get_json()
    stored = counts(app, "SELECT arguments FROM decisions WHERE id = :id", id=answer.get_json()["decision_id"])
    assert len(stored[0].encode()) == 16 * 1024
    refused = client.post("/v1/decisions", json={**body, "arguments": {"a": fits["a"] + "a"}}, headers=twin_agent)
    assert refused.status_code == 400 and refused.get_json()["error"]["field"] == "arguments"


def test_a_form_whose_content_length_is_not_ascii_digits_is_refused_not_a_500(client: FlaskClient) -> None:
    """int() reads "²" as an error and "１" as 1: the guard takes ASCII digits only, whatever the server."""
    for length in ("²", "１", "٣"):
        answer = client.post("/login", data="username=a&password=b", content_type="application/x-www-form-urlencoded",
                             environ_overrides={"CONTENT_LENGTH": length})
        assert 400 <= answer.status_code < 500, (length, answer.status_code)
