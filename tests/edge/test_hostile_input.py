"""The hostile-input battery (issue 12): every route, every field and header, malformed and extreme.

Against a real `gatekeeper serve` (gunicorn, 2 workers) on SQLite and on Postgres: no answer is a
5xx, every refusal of the API (and every refusal made before a route runs) carries the JSON error
body `{"error": {"code", "message", "field"?}}`, and no table changes by a single row.

The battery is a table: to cover a new field or route, add its valid body to `BODIES` (every
generic mutation is then applied to it) or a `Case` to `special_cases`.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.support.edge import AGENT, Target, refused_by_granian
from tests.support.rawhttp import RawAnswer, RawHTTP

LIMIT = 65536  # GATEKEEPER_MAX_BODY_BYTES of the served app (its default)
HUGE_INT = 10**20


@dataclass(frozen=True)
class Case:
    """One hostile request and the status it must get."""

    name: str
    method: str | bytes
    path: str | bytes
    expect: int
    role: str | None = "release_manager"  # whose token is sent; None: none
    body: bytes = b""
    headers: dict[str, Any] = field(default_factory=dict)
    framing: str = "length"
    dashboard: bool = False  # a signed-in dashboard request (cookie and CSRF token)


# route -> (token role, a valid body, its required fields); every generic mutation below is applied to each.
BODIES: dict[str, tuple[str, dict[str, Any], set[str]]] = {
    "/v1/agents": ("release_manager", {"name": "new-agent", "policy": "support-default", "stable_version": "v1"},
                   {"name", "policy"}),
    f"/v1/agents/{AGENT}/rollouts": ("release_manager", {"version": "v3", "reason": "r"}, {"version"}),
    f"/v1/agents/{AGENT}/promote": ("release_manager", {"reason": "r", "full": False}, {"reason"}),
    f"/v1/agents/{AGENT}/rollback": ("release_manager", {"reason": "r", "to_stage": "twin"}, {"reason"}),
    f"/v1/agents/{AGENT}/pause": ("release_manager", {"reason": "r"}, {"reason"}),
    f"/v1/agents/{AGENT}/resume": ("release_manager", {"reason": "r"}, {"reason"}),
    f"/v1/agents/{AGENT}/kill": ("release_manager", {"reason": "r"}, {"reason"}),
    f"/v1/agents/{AGENT}/abort": ("release_manager", {"reason": "r"}, {"reason"}),
    "/v1/approvals/{approval}/approve": ("release_manager", {"reason": "r"}, set()),
    "/v1/approvals/{approval}/reject": ("release_manager", {"reason": "r"}, set()),
    "/v1/sessions": ("agent", {"agent": AGENT, "session_key": "k", "environment": "twin", "scenario": "s",
                               "twin_snapshot_at": "2026-01-01T00:00:00Z"}, {"agent"}),
    f"/v1/agents/{AGENT}/stable": ("release_manager", {"version": "v9", "reason": "r"}, {"version", "reason"}),
    "/v1/tokens": ("release_manager", {"name": "n", "role": "agent", "agent": AGENT}, {"name", "role"}),
    "/v1/decisions": ("agent", {"session_id": "{session}", "tool": "search_kb", "cost": 0.01, "preview": "p",
                                "approval_id": "{approval}", "request_id": "req-1",
                                "arguments": {"q": "x", "to": {"list": [{"deep": "v"}]}}},
                      {"session_id", "tool", "cost"}),
    "/v1/decisions/{decision}/outcome": ("agent", {"status": "ok", "actual_cost": 0.01, "latency_ms": 5},
                                         {"status"}),
    "/v1/sessions/{session}/end": ("agent", {"status": "ok", "passed": True}, set()),
    "/v1/alerts": ("alertmanager", {"version": "4", "alerts": [{
        "status": "firing", "labels": {"agent": AGENT, "alertname": "x", "severity": "critical"},
        "annotations": {"a": "b"}, "startsAt": "2026-01-01T00:00:00Z", "fingerprint": "f"}]}, {"version", "alerts"}),
}
# Free-form objects: any value is valid inside them, so their leaves get the NUL case only (see arguments_cases).
FREE_FORM = {"arguments"}
# Routes that ignore unknown fields on purpose: Alertmanager adds fields in new releases.
IGNORES_UNKNOWN = {"/v1/alerts"}
# One character over each field's bound (the column it lands in); alert labels and annotations by their map.
LONG = {"name": 64, "policy": 201, "stable_version": 101, "version": 101, "reason": 501, "session_key": 201,
        "scenario": 201, "session_id": 41, "tool": 201, "preview": 1001, "approval_id": 41, "fingerprint": 101,
        "startsAt": 61, "agent": 64, "labels": 1001, "annotations": 10_001, "request_id": 101}
LONG_BY_ROUTE = {f"/v1/agents/{AGENT}/stable": {"reason": 1001}, "/v1/tokens": {"name": 201},
                 "/v1/approvals/{approval}/approve": {"reason": 1001},
                 "/v1/approvals/{approval}/reject": {"reason": 1001}}
EXTREME_NUMBERS = [HUGE_INT, -1, 1e309, "NaN", 2**63, -(2**63) - 1]


def generic_cases(route: str, role: str, valid: dict[str, Any], required: set[str]) -> list[Case]:
    """Malformed bodies, and every field of `valid` made wrong in every way that applies."""
    post = [Case(f"{route} not JSON", "POST", route, 400, role, b"{\"reason\": "),
            Case(f"{route} non-UTF-8 body", "POST", route, 400, role, b'{"reason": "\xff\xfe"}'),
            Case(f"{route} lone surrogate", "POST", route, 400, role, b'{"reason": "\\ud800"}'),
            Case(f"{route} array body", "POST", route, 400, role, b"[]"),
            Case(f"{route} deep nesting", "POST", route, 400, role, b"[" * 5000 + b"]" * 5000),
            Case(f"{route} unknown field", "POST", route, 200 if route in IGNORES_UNKNOWN else 400, role,
                 _json({**valid, "surprise": 1, **({"alerts": []} if route in IGNORES_UNKNOWN else {})})),
            Case(f"{route} over the limit", "POST", route, 413, role, _json(valid) + b" " * LIMIT),
            Case(f"{route} chunked over the limit", "POST", route, 413, role, _json(valid) + b" " * LIMIT,
                 framing="chunked"),
            Case(f"{route} 1 MB chunked", "POST", route, 413, role, b"[" * 1_000_000, framing="chunked")]
    for name, value in _leaves(valid):
        post += _field_cases(route, role, valid, name, value)
    post += [Case(f"{route} without {name}", "POST", route, 400, role,
                  _json({k: v for k, v in valid.items() if k != name})) for name in sorted(required)]
    return post


def _field_cases(route: str, role: str, valid: dict[str, Any], path: tuple[str, ...], value: Any) -> list[Case]:
    name = path[-1]
    if set(path) & FREE_FORM:
        return [Case(f"{route} NUL in {'.'.join(map(str, path))}", "POST", route, 400, role,
                     _json(_set(valid, path, value + "\x00")))] if isinstance(value, str) else []
    cases = [Case(f"{route} {name} as a list", "POST", route, 400, role, _json(_set(valid, path, [value])))]
    if isinstance(value, str):
        cases.append(Case(f"{route} NUL in {name}", "POST", route, 400, role, _json(_set(valid, path, value + "\x00"))))
        in_map = len(path) > 1 and path[-2] in ("labels", "annotations")
        bound = {**LONG, **LONG_BY_ROUTE.get(route, {})}.get(path[-2] if in_map else name)
        if bound is not None:
            cases.append(Case(f"{route} {name} too long", "POST", route, 400, role,
                              _json(_set(valid, path, "a" * bound))))
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        cases += [Case(f"{route} {name}={n!r}", "POST", route, 400, role, _number(valid, path, n))
                  for n in EXTREME_NUMBERS]
    return cases


def special_cases(target: Target) -> list[Case]:
    """Paths, query strings, headers, HTTP framing, timestamps and the dashboard's forms."""
    session, decision, approval = target.ids["session"], target.ids["decision"], target.ids["approval"]
    paths = [f"/v1/agents/{AGENT}", f"/v1/agents/{AGENT}/history", f"/v1/approvals/{approval}",
             f"/v1/decisions/{decision}/outcome", f"/v1/sessions/{session}/end", f"/agents/{AGENT}",
             f"/v1/approvals/{approval}/approve", f"/v1/agents/{AGENT}/pause", f"/v1/agents/{AGENT}/stable",
             "/v1/tokens", f"/v1/tokens/{target.ids['token']}/revoke", "/v1/scheduler", f"/v1/sessions/{session}",
             f"/sessions/{session}"]
    cases = []
    for path in paths:
        method = "POST" if path.endswith(("/outcome", "/end", "/approve", "/pause", "/stable", "/revoke")) else "GET"
        role = "agent" if path.endswith(("/outcome", "/end")) else "release_manager"
        web = path.startswith(("/agents/", "/sessions/"))
        cases += [Case(f"NUL in {path}", method, path + "%00", 400, role, dashboard=web),
                  Case(f"raw NUL in {path}", method, path.encode() + b"\x00x", 400, role, dashboard=web),
                  Case(f"non-UTF-8 in {path}", method, path + "%ff%fe", 400, role, dashboard=web),
                  Case(f"NUL mid-{path}", method, path.replace("/", "/%00", 2), 400, role, dashboard=web),
                  Case(f"overlong {path}", method, path + "x" * 3000, 404, role, b"{}", dashboard=web)]
    history = f"/v1/agents/{AGENT}/history"
    for query in (f"offset={HUGE_INT}", f"offset={2**63}", "offset=-1", "offset=abc", "limit=0", "limit=501",
                  f"limit={HUGE_INT}", "kind=bogus", "surprise=1", "offset=1e3", "limit=%00", "kind=%ff"):
        cases.append(Case(f"history ?{query}", "GET", f"{history}?{query}", 400))
    for query in ("state=bogus", "state=%00", "surprise=1", "state=" + "p" * 3000):
        cases.append(Case(f"approvals ?{query[:30]}", "GET", f"/v1/approvals?{query}", 400))
    for query in ("state=bogus", "state=%00", "surprise=1", "state=%ff", "state=" + "a" * 3000):
        cases.append(Case(f"tokens ?{query[:30]}", "GET", f"/v1/tokens?{query}", 400))
    cases += _new_route_cases(target) + _arguments_cases(session) + _timestamp_cases() + _auth_cases(target)
    cases += _framing_cases() + _dashboard_cases(target, approval)
    cases += [Case("400-digit cost", "POST", "/v1/decisions", 400, "agent",
                   b'{"session_id": "%s", "tool": "t", "cost": %s}' % (session.encode(), b"9" * 400)),
              Case("4000-digit offset", "GET", f"{history}?offset={'9' * 4000}", 400),
              Case("Expect: 100-continue", "POST", "/v1/agents", 400, body=b"{}", headers={"Expect": "100-continue"}),
              Case("10 MB chunked after valid JSON", "POST", "/v1/sessions", 413, "agent",
                   b'{"agent": "%s"}' % AGENT.encode() + b" " * 10_000_000, framing="chunked"),
              Case("HEAD of a GET route", "HEAD", "/v1/agents", 200),
              Case("OPTIONS of a POST route", "OPTIONS", "/v1/decisions", 200, None)]
    cases += [Case("PUT on a list", "PUT", "/v1/agents", 405), Case("DELETE on an agent", "DELETE",
                                                                    f"/v1/agents/{AGENT}", 405),
              Case("GET on a POST route", "GET", "/v1/decisions", 405, "agent"),
              Case("unknown route", "GET", "/v1/nothing", 404)]
    return cases


def _new_route_cases(target: Target) -> list[Case]:
    """Token ids, the trace and scheduler routes, and a revoked token (routes added after the battery)."""
    revoked = target.ids["token"]
    cases = [Case(f"revoke token {token_id!r}", "POST", f"/v1/tokens/{token_id}/revoke", 404)
             for token_id in (str(HUGE_INT), str(2**63), str(2**31), "9" * 4000, "-1", "0", "abc", "1e3", "%201",
                              "%C2%B2", "%D9%A3", "%EF%BC%91", "0x1")]
    cases += [Case("revoke a revoked token", "POST", f"/v1/tokens/{revoked}/revoke", 409),
              Case("revoked token reads", "GET", "/v1/agents", 401, None,
                   headers={"Authorization": f"Bearer {target.tokens['revoked']}"}),
              Case("revoked token makes a token", "POST", "/v1/tokens", 401, None,
                   _json({"name": "n", "role": "release_manager"}),
                   headers={"Authorization": f"Bearer {target.tokens['revoked']}"}),
              Case("agent token lists tokens", "GET", "/v1/tokens", 403, "agent"),
              Case("viewer makes a token", "POST", "/v1/tokens", 403, "viewer", _json({"name": "n", "role": "viewer"})),
              Case("viewer revokes a token", "POST", f"/v1/tokens/{revoked}/revoke", 403, "viewer"),
              Case("token for an unknown role", "POST", "/v1/tokens", 400, body=_json({"name": "n", "role": "root"})),
              Case("agent token without an agent", "POST", "/v1/tokens", 400,
                   body=_json({"name": "n", "role": "agent"})),
              Case("viewer token with an agent", "POST", "/v1/tokens", 400,
                   body=_json({"name": "n", "role": "viewer", "agent": AGENT})),
              Case("agent token without its agent slug", "POST", "/v1/tokens", 400,
                   body=_json({"name": "n", "role": "agent", "agent": "Not A Slug"})),
              Case("agent reads the scheduler", "GET", "/v1/scheduler", 403, "agent"),
              Case("POST on the scheduler", "POST", "/v1/scheduler", 405, body=b"{}"),
              Case("stable for an unknown agent", "POST", "/v1/agents/no-such-agent/stable", 404,
                   body=_json({"version": "v9", "reason": "r"})),
              Case("stable for a bad slug", "POST", "/v1/agents/Bad_Slug/stable", 404,
                   body=_json({"version": "v9", "reason": "r"})),
              Case("stable with an empty reason", "POST", f"/v1/agents/{AGENT}/stable", 400,
                   body=_json({"version": "v9", "reason": ""}))]
    for session_id in ("no-such-session", "a" * 41, str(HUGE_INT), "%C3%A9"):
        cases += [Case(f"trace of {session_id[:20]!r}", "GET", f"/v1/sessions/{session_id}", 404),
                  Case(f"trace page of {session_id[:20]!r}", "GET", f"/sessions/{session_id}", 404, None,
                       dashboard=True)]
    return cases


def _arguments_cases(session: str) -> list[Case]:
    """A decision's `arguments` (an object of at most 16 KiB) and `request_id` (1 to 100 printable ASCII)."""
    base = {"session_id": session, "tool": "search_kb", "cost": 0.01}
    nested: dict[str, Any] = {"v": "a\x00b"}
    for _ in range(30):
        nested = {"n": [nested]}
    bad_arguments: dict[str, Any] = {
        "a list": [1], "a string": "x", "a number": 1, "true": True, "NUL in a key": {"a\x00": 1},
        "NUL 31 levels down": nested, "NUL in a nested key": {"a": [{"b": {"\x00": "c"}}]},
        "NUL in a list": {"a": ["ok", "\x00"]}, "16 KiB + 1": {"a": "a" * (16 * 1024 - 7)},
    }
    cases = [Case(f"arguments {name}", "POST", "/v1/decisions", 400, "agent", _json({**base, "arguments": value}))
             for name, value in bad_arguments.items()]
    raw = {"NaN": b"NaN", "Infinity": b"Infinity", "-Infinity": b"-Infinity", "1e309": b"1e309",
           "5000 digits": b"9" * 5000, "5000 deep": b"[" * 5000 + b"]" * 5000, "lone surrogate": b'"\\ud800"',
           "surrogate key": b'{"\\udfff": 1}', "non-UTF-8": b'"\xff"', "duplicate keys": b'{"a": 1, "a": "\\u0000"}'}
    prefix = _json(base)[:-1] + b', "arguments": {"x": '
    cases += [Case(f"arguments holding {name}", "POST", "/v1/decisions", 400, "agent", prefix + value + b"}}")
              for name, value in raw.items()]
    for name, value in {"empty": "", "101 characters": "r" * 101, "a tab": "a\tb", "a newline": "a\nb", "DEL": "a\x7f",
                        "non-ASCII": "r\u00e9", "a number": 7, "null byte only": "\x00", "an object": {"a": 1}}.items():
        cases.append(Case(f"request_id {name}", "POST", "/v1/decisions", 400, "agent",
                          _json({**base, "request_id": value})))
    return cases


def _timestamp_cases() -> list[Case]:
    base = {"agent": AGENT, "environment": "twin", "scenario": "s"}
    bad = ["0000-01-01T00:00:00", "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00", "10000-01-01T00:00:00",
           "2026-13-01T00:00:00", "yesterday", "", "2026-01-01T00:00:00+99:00"]
    return [Case(f"twin_snapshot_at={value!r}", "POST", "/v1/sessions", 400, "agent",
                 _json({**base, "twin_snapshot_at": value})) for value in bad]


def _auth_cases(target: Target) -> list[Case]:
    token = target.tokens["release_manager"]
    malformed = ("", "Bearer", "Bearer ", "Basic dXNlcjpwYXNz", f"Token {token}", f"Bearer {token} extra",
                 f"Bearer{token}", "Bearer \xff\xfe", "Bearer " + "a" * 5000, "Bearer gk_unknown",
                 f"Bearer {token[:-2]}", "Bearer \"quoted\"")
    cases = [Case(f"Authorization #{n}", "GET", "/v1/agents", 401, None, headers={"Authorization": header})
             for n, header in enumerate(malformed)]
    cases += [Case(f"{scheme} scheme", "POST", "/v1/agents", 400, None, b"{}",
                   headers={"Authorization": f"{scheme} {token}"}) for scheme in ("bearer", "BEARER", "bEaReR")]
    cases += [Case("no token", "POST", "/v1/decisions", 401, None, b"{}"),
              Case("viewer acts", "POST", f"/v1/agents/{AGENT}/pause", 403, "viewer", b'{"reason": "r"}'),
              Case("agent reads agents", "GET", "/v1/agents", 403, "agent"),
              Case("alertmanager decides", "POST", "/v1/decisions", 403, "alertmanager", b"{}"),
              Case("agent for another agent", "POST", "/v1/sessions", 403, "agent", b'{"agent": "other-bot"}')]
    return cases


def _framing_cases() -> list[Case]:
    return [
        Case("request line over 4 KiB", "GET", "/v1/agents?" + "a" * 5000, 414),
        Case("header over 8 KiB", "GET", "/v1/agents", 431, headers={"X-Padding": "a" * 9000}),
        Case("101 headers", "GET", "/v1/agents", 431, headers={f"X-H{i}": "v" for i in range(101)}),
        Case("NUL in a header value", "GET", "/v1/agents", 400, headers={"X-Thing": "a\x00b"}),
        Case("NUL in a header name", "GET", "/v1/agents", 400, headers={"X-\x00": "b"}),
        Case("non-ASCII header value", "GET", "/healthz", 200, None, headers={"X-Thing": b"\xff\xfe"}),
        Case("NUL in the method", b"G\x00T", "/v1/agents", 400),
        Case("lowercase method", "get", "/v1/agents", 400),
        Case("Content-Length and chunked", "POST", "/v1/agents", 400, body=b"{}",
             headers={"Content-Length": "2", "Transfer-Encoding": "chunked"}, framing="none"),
        Case("negative Content-Length", "POST", "/v1/agents", 400, headers={"Content-Length": "-1"}, framing="none"),
        Case("non-numeric Content-Length", "POST", "/v1/agents", 400, headers={"Content-Length": "abc"},
             framing="none"),
        Case("superscript Content-Length", "POST", "/v1/agents", 400, headers={"Content-Length": b"\xb2"},
             framing="none"),
        Case("huge Content-Length", "POST", "/v1/agents", 413, headers={"Content-Length": str(HUGE_INT)},
             framing="none"),
        Case("gzip transfer coding", "POST", "/v1/agents", 400, headers={"Transfer-Encoding": "gzip"},
             framing="none"),
        Case("bad chunk size", "POST", "/v1/agents", 400, body=b"zz\r\n{}\r\n0\r\n\r\n",
             headers={"Transfer-Encoding": "chunked"}, framing="none"),
        Case("form body on a JSON route", "POST", "/v1/agents", 400, body=b"name=x",
             headers={"Content-Type": "application/x-www-form-urlencoded"}),
    ]


def _dashboard_cases(target: Target, approval: str) -> list[Case]:
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    act, decide = f"/agents/{AGENT}/actions/pause", f"/approvals/{approval}/approve"
    csrf = f"csrf_token={target.csrf}"
    cases = [Case(f"form NUL in reason {act}", "POST", act, 400, None, f"{csrf}&reason=a%00b".encode(), form,
                  dashboard=True),
             Case(f"form non-UTF-8 reason {act}", "POST", act, 400, None, f"{csrf}&reason=%ff".encode(), form,
                  dashboard=True),
             Case(f"form reason too long {act}", "POST", act, 400, None, f"{csrf}&reason={'a' * 501}".encode(), form,
                  dashboard=True),
             Case(f"form without reason {act}", "POST", act, 400, None, csrf.encode(), form, dashboard=True),
             Case("form rollback to a bogus stage", "POST", f"/agents/{AGENT}/actions/rollback", 400, None,
                  f"{csrf}&reason=r&to_stage=bogus".encode(), form, dashboard=True),
             Case("form unknown action", "POST", f"/agents/{AGENT}/actions/explode", 404, None,
                  f"{csrf}&reason=r".encode(), form, dashboard=True),
             Case("form without CSRF", "POST", act, 400, None, b"reason=r", form, dashboard=True),
             Case(f"form NUL in reason {decide}", "POST", decide, 400, None, f"{csrf}&reason=%00".encode(), form,
                  dashboard=True),
             Case(f"form reason too long {decide}", "POST", decide, 400, None,
                  f"{csrf}&reason={'a' * 1001}".encode(), form, dashboard=True),
             Case("form chunked over the limit", "POST", act, 413, None, f"{csrf}&reason=r&x=".encode() + b"a" * LIMIT,
                  form, framing="chunked", dashboard=True),
             Case("login NUL user", "POST", "/login", 400, None, b"username=a%00&password=b", form),
             Case("login non-UTF-8 password", "POST", "/login", 400, None, b"username=a&password=%ff", form),
             Case("policies NUL revision", "GET", "/policies?revision=%00", 400, None, dashboard=True),
             Case("forged session cookie", "GET", "/approvals", 302, None,
                  headers={"Cookie": "gatekeeper_session=x.y.z"}),
             Case("forged CSRF header", "POST", act, 400, None, b"reason=r", {**form, "X-CSRF-Token": "forged"},
                  dashboard=True),
             Case("multipart form", "POST", act, 400, None,
                  b'--b\r\nContent-Disposition: form-data; name="reason"\r\n\r\na\x00b\r\n--b--\r\n',
                  {"Content-Type": "multipart/form-data; boundary=b", "X-CSRF-Token": target.csrf}, dashboard=True),
             Case("control byte in a header", "GET", "/", 400, None, headers={"X-Forwarded-Host": "\xff\x01"})]
    for page in (str(HUGE_INT), str(2**63), "-1", "1000001"):
        cases.append(Case(f"agent page {page}", "GET", f"/agents/{AGENT}?page={page}", 400, None, dashboard=True))
    return cases


def all_cases(target: Target) -> list[Case]:
    """Every case of the battery, with the seeded ids filled in."""
    cases = [c for route, (role, body, required) in BODIES.items() for c in generic_cases(route, role, body, required)]
    cases += special_cases(target)
    return [_fill(c, target) for c in cases]


def run(target: Target, case: Case) -> RawAnswer:
    """Send one case to the server."""
    headers = dict(case.headers)
    if case.role is not None:
        headers.update(target.auth(case.role))
    if case.dashboard:
        headers["Cookie"] = target.cookie
    if case.body and "Content-Type" not in headers and not case.dashboard:
        headers["Content-Type"] = "application/json"
    return RawHTTP("127.0.0.1", target.port).send(case.method, case.path, headers=headers, body=case.body,
                                                  framing=case.framing)


def problems(case: Case, answer: RawAnswer, *, server: str = "gunicorn") -> list[str]:
    """Return what is wrong with the answer to one case (empty when it is right)."""
    if server == "granian" and (status := refused_by_granian(case.name)) is not None:
        right = answer.status == status and not answer.body
        return [] if right else [f"granian answered {answer.status}, expected {status}: {answer.body[:200]!r}"]
    found = []
    if answer.status != case.expect:
        found.append(f"status {answer.status}, expected {case.expect}: {answer.body[:200]!r}")
    html_page = case.dashboard and answer.headers.get("content-type", "").startswith("text/html")
    if answer.status >= 400 and not html_page:
        found += _error_shape(answer)
    if answer.status == 405 and not answer.headers.get("allow"):
        found.append("a 405 without an Allow header")
    return found


def _error_shape(answer: RawAnswer) -> list[str]:
    if not answer.headers.get("content-type", "").startswith("application/json"):
        return [f"content type {answer.headers.get('content-type')!r}: {answer.body[:200]!r}"]
    try:
        error = answer.json()["error"]
    except (ValueError, KeyError, TypeError):
        return [f"not the JSON error body: {answer.body[:200]!r}"]
    wrong = set(error) - {"code", "message", "field"} or {"code", "message"} - set(error)
    types_ok = all(isinstance(error.get(k, ""), str) for k in ("code", "message", "field"))
    return [] if not wrong and types_ok and error["message"] else [f"error body {error!r}"]


@pytest.mark.parametrize("target", ["sqlite", "postgres", "granian"], indirect=True)
def test_hostile_input_gets_4xx_json_and_changes_nothing(target: Target) -> None:
    cases = all_cases(target)
    assert len(cases) >= 150, len(cases)
    assert len({c.name for c in cases}) == len(cases), [n for n, k in Counter(c.name for c in cases).items() if k > 1]
    before = target.snapshot()
    failures, statuses = [], Counter[int]()
    for case in cases:
        answer = run(target, case)
        statuses[answer.status] += 1
        failures += [f"{case.name}: {p}" for p in problems(case, answer, server=target.server)]
    assert not failures, "\n".join(failures)
    assert not [s for s in statuses if s >= 500], statuses
    assert target.snapshot() == before
    # The server is still healthy after all that, and on both workers.
    assert all(RawHTTP("127.0.0.1", target.port).send("GET", "/readyz").status == 200 for _ in range(4))


def _fill(case: Case, target: Target) -> Case:
    ids = {"{session}": target.ids["session"], "{decision}": target.ids["decision"],
           "{approval}": target.ids["approval"]}

    def fill(value: Any) -> Any:
        if isinstance(value, str):
            for key, real in ids.items():
                value = value.replace(key, real)
        elif isinstance(value, bytes):
            for key, real in ids.items():
                value = value.replace(key.encode(), real.encode())
        return value

    return Case(case.name, case.method, fill(case.path), case.expect, case.role, fill(case.body), case.headers,
                case.framing, case.dashboard)


def _leaves(value: dict[str, Any], prefix: tuple[str | int, ...] = ()) -> list[tuple[tuple[Any, ...], Any]]:
    found: list[tuple[tuple[Any, ...], Any]] = []
    for key, item in value.items():
        if isinstance(item, dict):
            found += _leaves(item, (*prefix, key))
        elif isinstance(item, list) and item and isinstance(item[0], dict):
            found += _leaves(item[0], (*prefix, key, 0))
        else:
            found.append(((*prefix, key), item))
    return found


def _set(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    copy = json.loads(json.dumps(value))
    here = copy
    for part in path[:-1]:
        here = here[part]
    here[path[-1]] = new
    return copy


def _number(valid: dict[str, Any], path: tuple[Any, ...], number: Any) -> bytes:
    marker = "__NUMBER__"
    text = json.dumps(_set(valid, path, marker))
    literal = {1e309: "1e309", "NaN": "NaN"}.get(number, str(number))
    return text.replace(f'"{marker}"', literal).encode()


def _json(value: Any) -> bytes:
    return json.dumps(value).encode()
