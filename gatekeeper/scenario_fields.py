"""Field types of machine-made scenario files (SPEC §4 `stages.twin.scenario_files`).

`ScenarioFileName` is how a policy names a scenario file beside it; `RecordedFormat` says which
recorded session a scenario was made from, so that the stable version's twin runs of it can be
judged for fidelity.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from gatekeeper.policy_fields import unique

SCENARIO_FILE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*\.scenarios\.ya?ml$")


def _file_name(name: str) -> str:
    if not SCENARIO_FILE.match(name):
        raise ValueError(f"'{name}' must be a file name beside the policy ending in .scenarios.yaml "
                         "(no folders)")
    return name


ScenarioFileName = Annotated[str, Field(pattern=SCENARIO_FILE.pattern), AfterValidator(_file_name)]
UniqueScenarioFiles = Annotated[list[ScenarioFileName], Field(json_schema_extra={"uniqueItems": True}),
                                AfterValidator(unique)]


class RecordedFormat(BaseModel):
    """The session a scenario was made from."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    session: str = Field(min_length=1, max_length=40, description="the recorded session's id")
    version: str = Field(max_length=100, description="the agent version that ran it")
    arm: Literal["stable", "candidate"] = Field(description="the arm that ran it")
    environment: Literal["live", "twin"] = Field(description="live sessions can measure the twin's fidelity")
    at: float = Field(description="when the session started, Unix seconds")
    incident: str | None = Field(None, max_length=200, description="the kill switch or alert it tripped, if any")
