"""Traces become scenarios: POST /v1/sessions/<id>/scenario makes a twin scenario from a recorded session."""

from __future__ import annotations

from typing import Any

from flask import Blueprint
from pydantic import BaseModel, Field

from gatekeeper import scenarios
from gatekeeper.api.auth import ACTORS, Caller
from gatekeeper.api.fields import SafeStr
from gatekeeper.api.routing import endpoint
from gatekeeper.api.schemas import Strict
from gatekeeper.services import services

bp = Blueprint("scenario_routes", __name__)
NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$"


class ScenarioCreate(Strict):
    name: str = Field(pattern=NAME, description="the new scenario's name")
    forbid: list[SafeStr] = Field(default_factory=list, max_length=100,
                                  description="tools the scenario must never call")
    arguments: list[SafeStr] | None = Field(default=None, max_length=200,
                                        description="the arguments that matter, as tool.field; "
                                                    "absent: every scalar argument of every step")


class RecordedView(BaseModel):
    session: str
    version: str
    arm: str
    environment: str
    at: float
    incident: str | None


class ScenarioMade(BaseModel):
    scenario: str
    file: str = Field(description="the scenario file beside the policy it was added to")
    listed: bool = Field(description="whether the policy names that file in stages.twin.scenario_files yet")
    expect: list[str]
    forbid: list[str]
    arguments: list[dict[str, Any]] = Field(default_factory=list)
    recorded: RecordedView
    note: str


@endpoint(bp, "/v1/sessions/<session_id>/scenario", methods=["POST"], roles=ACTORS, body=ScenarioCreate,
          response=ScenarioMade, status=201)
def make_scenario(session_id: str, *, caller: Caller, body: ScenarioCreate) -> dict[str, Any]:
    """Make a twin scenario from a recorded session, in the scenario file beside its agent's policy."""
    made = scenarios.from_session(services(), session_id, name=body.name, forbid=body.forbid,
                                  arguments=body.arguments)
    return made.as_dict()
