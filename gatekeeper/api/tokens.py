"""Token management for release managers: list, create (the secret is shown once), revoke (SPEC §5)."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Literal

from flask import Blueprint
from pydantic import BaseModel, ConfigDict, Field

from gatekeeper.api.auth import ACTORS, Caller
from gatekeeper.api.fields import INT_MAX, SafeStr
from gatekeeper.api.routing import endpoint
from gatekeeper.api.schemas import SLUG, timestamp, utc
from gatekeeper.errors import NotFound
from gatekeeper.services import services
from gatekeeper.store import tokens as store
from gatekeeper.store.models import ApiToken

bp = Blueprint("tokens", __name__)
Role = Literal["agent", "viewer", "release_manager", "alertmanager"]


class TokenCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: SafeStr = Field(min_length=1, max_length=200, description="who or what holds the token (audit trail)")
    role: Role
    agent: str | None = Field(default=None, pattern=SLUG, description="the agent an `agent` token is scoped to")


class TokenView(BaseModel):
    id: int
    name: str
    role: str
    agent: str | None
    created_at: datetime
    revoked_at: datetime | None


class TokenCreated(TokenView):
    token: str = Field(description="the secret; shown only in this response")


class TokenQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")
    state: Literal["all", "active", "revoked"] = "all"


@endpoint(bp, "/v1/tokens", methods=["GET"], roles=ACTORS, query=TokenQuery, response=list[TokenView])
def list_tokens(*, caller: Caller, query: TokenQuery) -> list[TokenView]:
    """List tokens, oldest first; secrets and hashes are never shown."""
    wanted = {"all": (True, False), "active": (False,), "revoked": (True,)}[query.state]
    with services().db.reading() as db:
        return [_view(row) for row in store.list_tokens(db=db) if (row.revoked_at is not None) in wanted]


@endpoint(bp, "/v1/tokens", methods=["POST"], roles=ACTORS, body=TokenCreate, response=TokenCreated, status=201)
def create_token(*, caller: Caller, body: TokenCreate) -> TokenCreated:
    """Create a token and return its secret, once."""
    svc = services()
    with svc.db.transaction() as db:
        plaintext, row = store.create_token(body.name, role=body.role, agent=body.agent, now=svc.clock(), db=db)
    return TokenCreated(**_view(row).model_dump(), token=plaintext)


@endpoint(bp, "/v1/tokens/<token_id>/revoke", methods=["POST"], roles=ACTORS, response=TokenView)
def revoke_token(token_id: str, *, caller: Caller) -> TokenView:
    """Revoke a token; every worker refuses it from the next request on."""
    # ASCII digits only: str.isdigit() and int() also take "²" (which int() refuses) and "１" or "٣" (token 1, 3).
    if not re.fullmatch(r"[0-9]{1,10}", token_id) or int(token_id) > INT_MAX:
        raise NotFound(f"no token with id {token_id[:40]!r}", field="token_id")
    with services().db.transaction() as db:
        row = store.revoke_token(int(token_id), actor=caller.actor, now=services().clock(), db=db)
    return _view(row)


def _view(row: ApiToken) -> TokenView:
    return TokenView(id=row.id or 0, name=row.name, role=row.role, agent=row.agent, created_at=utc(row.created_at),
                     revoked_at=timestamp(row.revoked_at))
