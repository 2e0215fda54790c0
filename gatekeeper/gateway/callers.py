"""Who is calling the gateway, and which Gatekeeper session they ask for: HTTP headers or stdio's environment.

| HTTP header | stdio variable | what |
|---|---|---|
| `Authorization: Bearer <token>` | `GATEKEEPER_AGENT_TOKEN` | the agent token (required) |
| `Gatekeeper-Session-Key` | `GATEKEEPER_SESSION_KEY` | sticky arm assignment; required on 2026-07-28 |
| `Gatekeeper-Environment` | `GATEKEEPER_ENVIRONMENT` | `live` (default) or `twin` |
| `Gatekeeper-Version` | `GATEKEEPER_VERSION` | a candidate joining its live session's shadow mirror |
| `Gatekeeper-Seed` | `GATEKEEPER_SEED` | twin: the seed of the rehearsed failures (rehearsal.py) |
| `Gatekeeper-Scenario` | `GATEKEEPER_SCENARIO` | twin: the policy's scenario the run is judged against |
| `Gatekeeper-Arm` | `GATEKEEPER_ARM` | twin: `stable` runs the stable version (a fidelity replay) |
| `Gatekeeper-Twin-Snapshot-At` | `GATEKEEPER_TWIN_SNAPSHOT_AT` | twin: when the twin's data was taken (ISO 8601) |

They open the session `POST /v1/sessions` would open with the same fields, checked the same way: a
scenario the policy lacks, a twin field outside a twin session or a malformed value is an error the
MCP client sees, and opens nothing. When the MCP session ends (DELETE, close, idle timeout) a
scenario run's trajectory is judged as `POST /v1/sessions/{id}/end` judges it without a harness
verdict. On 2026-07-28 (no MCP session) the token and every field are the session's identity:
requests that send the same values share one Gatekeeper session; another value opens another.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

SESSION_KEY, ENVIRONMENT, VERSION = "gatekeeper-session-key", "gatekeeper-environment", "gatekeeper-version"
SEED, SCENARIO, ARM = "gatekeeper-seed", "gatekeeper-scenario", "gatekeeper-arm"
SNAPSHOT_AT = "gatekeeper-twin-snapshot-at"


@dataclass(frozen=True)
class Caller:
    """Who opened an MCP session, and what they asked for."""

    token: str | None
    session_key: str | None = None
    environment: str = "live"
    version: str | None = None
    seed: str | None = None  # twin sessions: the seed of the rehearsed failures
    scenario: str | None = None  # twin sessions: the scenario whose trajectory this run is judged against
    arm: str | None = None  # twin sessions: "stable" runs the stable version (a fidelity replay)
    snapshot_at: str | None = None  # twin sessions: when the twin's data snapshot was taken (ISO 8601)


def bearer(header: str | None) -> str | None:
    """Return the token of an `Authorization: Bearer` header."""
    scheme, _, token = (header or "").strip().partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def header_caller(headers: Mapping[str, str]) -> Caller:
    """Read who is calling, and the session they ask for, from an HTTP request's (lower-cased) headers."""
    return Caller(bearer(headers.get("authorization")), headers.get(SESSION_KEY) or None,
                  headers.get(ENVIRONMENT) or "live", headers.get(VERSION) or None, headers.get(SEED) or None,
                  headers.get(SCENARIO) or None, headers.get(ARM) or None, headers.get(SNAPSHOT_AT) or None)


def stdio_caller(environ: Mapping[str, str]) -> Caller:
    """Read who is calling from the environment the agent launched the gateway with."""
    return Caller(environ.get("GATEKEEPER_AGENT_TOKEN") or None, environ.get("GATEKEEPER_SESSION_KEY") or None,
                  environ.get("GATEKEEPER_ENVIRONMENT") or "live", environ.get("GATEKEEPER_VERSION") or None,
                  environ.get("GATEKEEPER_SEED") or None, environ.get("GATEKEEPER_SCENARIO") or None,
                  environ.get("GATEKEEPER_ARM") or None, environ.get("GATEKEEPER_TWIN_SNAPSHOT_AT") or None)
