"""Bearer-token authentication and role checks for the JSON API.

A token's role decides what it may call: `viewer` reads, `release_manager` reads and acts,
`agent` calls the runtime routes of its own agent only, `alertmanager` posts alerts.
Lookups are cached per process because every tool-call decision authenticates. Each request
first reads the revocation mark (store/tokens.py): when it moved, the cache is dropped, so a
revoked token is refused on the very next request in every worker. Decisions and outcome
reports read the mark inside their own transaction instead (`authenticate_deferred`): a cached
caller is taken as is, and when the transaction finds the mark moved it rolls back and the
request is authenticated again, so the check costs no statement of its own. Unknown tokens are
remembered for `token_cache.CACHE_SECONDS` only, so a token created meanwhile works at once.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

from gatekeeper.errors import Forbidden, Unauthorized
from gatekeeper.services import services
from gatekeeper.store.tokens import find_token

MAX_TOKEN = 512
_TOKEN68 = re.compile(r"[A-Za-z0-9._~+/-]+=*")
READERS = ("viewer", "release_manager")
ACTORS = ("release_manager",)


@dataclass(frozen=True)
class Caller:
    """Who is calling: the token's name, role and (for agent tokens) its agent."""

    name: str
    role: str
    agent: str | None = None

    @property
    def actor(self) -> str:
        """Return how the audit trail names this caller."""
        return f"{self.role}:{self.name}"

    def require_agent(self, agent: str) -> None:
        """Refuse an agent token acting for another agent."""
        if self.role == "agent" and self.agent != agent:
            raise Forbidden(f"this token is scoped to agent {self.agent!r}", field="agent")


def authenticate(header: str | None, *, roles: tuple[str, ...]) -> Caller:
    """Return the caller of a request, or raise 401/403."""
    if not roles:
        return Caller(name="anonymous", role="public")
    caller = _lookup(bearer_token(header))
    if caller is None:
        raise Unauthorized("unknown or revoked token")
    if caller.role not in roles:
        raise Forbidden(f"role {caller.role} may not do this; needs {' or '.join(roles)}")
    return caller


def authenticate_deferred(header: str | None, *, roles: tuple[str, ...]) -> tuple[Caller, int | None]:
    """Return a cached caller and the mark its transaction must find, or authenticate now (mark None)."""
    token = bearer_token(header)
    cache = services().tokens
    expected = cache.seen_mark  # read first: a mark moved meanwhile is found by the transaction
    found, cached = cache.peek(token, time.monotonic())
    if found and isinstance(cached, Caller) and cached.role in roles:
        return cached, expected
    return authenticate(header, roles=roles), None  # refusals and misses read the mark now


def bearer_token(header: str | None) -> str:
    """Return the token of an `Authorization: Bearer <token>` header (any case of the scheme), or raise 401."""
    scheme, _, token = (header or "").strip().partition(" ")
    token = token.strip()
    # RFC 6750 token68: one run of visible ASCII; anything else cannot be a token of ours.
    if scheme.lower() != "bearer" or not token or len(token) > MAX_TOKEN or not _TOKEN68.fullmatch(token):
        raise Unauthorized("send Authorization: Bearer <token>", field="authorization")
    return token


def _lookup(token: str) -> Caller | None:
    svc = services()
    cache = svc.tokens
    now = time.monotonic()
    found, cached = cache.get(token, now)
    if found:
        return cached if isinstance(cached, Caller) else None
    with svc.db.reading() as db:
        row = find_token(token, db=db)
        caller = None if row is None else Caller(name=row.name, role=row.role, agent=row.agent)
    cache.put(token, caller, now)
    return caller
