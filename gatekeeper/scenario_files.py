"""Machine-made scenario files beside a policy (SPEC §4 `stages.twin.scenario_files`).

A person's policy file is never rewritten: scenarios made from recorded sessions go to their own
file, `<policy file stem>.scenarios.yaml` by default, which the policy names once in
`stages.twin.scenario_files`. Each file holds `scenarios` (name -> expect, forbid, arguments, the
same format as the policy's own) and `recorded` (name -> the session it was made from). Loading
merges them into the policy's twin scenarios; a file that does not exist yet holds none.
"""

from __future__ import annotations

import dataclasses
import fcntl
import os
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gatekeeper.core.policy import Policy, Recording, Scenario
from gatekeeper.policy_format import ScenarioFormat
from gatekeeper.policy_problems import PolicyProblem
from gatekeeper.scenario_fields import RecordedFormat

MAX_SCENARIO_FILE_BYTES = 5_000_000
HEADER = ("# Scenarios made by Gatekeeper from recorded sessions (gatekeeper scenario from-session).\n"
          "# Name this file in the policy's stages.twin.scenario_files; edit or delete entries freely.\n")


class ScenarioFileFormat(BaseModel):
    """A machine-made scenario file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    scenarios: dict[str, ScenarioFormat] = Field(default_factory=dict)
    recorded: dict[str, RecordedFormat] = Field(default_factory=dict)


def is_scenario_file(path: Path) -> bool:
    """Return whether a file in the policy folder is a scenario file, not a policy."""
    return path.name.endswith((".scenarios.yaml", ".scenarios.yml"))


def default_file_name(policy_file: str) -> str:
    """Return the scenario file name a policy file gets by default: `<stem>.scenarios.yaml`."""
    return f"{Path(policy_file).stem}.scenarios.yaml"


def with_scenario_files(policy: Policy, *, folder: Path) -> tuple[Policy, list[PolicyProblem]]:
    """Merge the scenarios of the files the policy names into its twin scenarios; return any problems."""
    merged = dict(policy.twin.scenarios)
    problems: list[PolicyProblem] = []
    for name in policy.twin.scenario_files:
        path = folder / name
        doc, found = _read(path)
        problems += found
        for scenario_name, entry in (doc.scenarios.items() if doc else ()):
            where = f"scenarios.{scenario_name}"
            unknown = [tool for tool in (*entry.expect, *entry.forbid) if tool not in policy.tools]
            if scenario_name in merged:
                problems.append(PolicyProblem(str(path), where, "is already a scenario of the policy or an "
                                                                "earlier scenario file"))
            elif unknown:
                problems.append(PolicyProblem(str(path), where, f"tool '{unknown[0]}' is not in the policy's tools"))
            else:
                merged[scenario_name] = to_scenario(scenario_name, entry, doc.recorded.get(scenario_name) if doc
                                                    else None, file=name)
    twin = dataclasses.replace(policy.twin, scenarios=MappingProxyType(merged))
    return dataclasses.replace(policy, twin=twin), problems


def to_scenario(name: str, entry: ScenarioFormat, recorded: RecordedFormat | None, *, file: str | None
                ) -> Scenario:
    """Build the core scenario from its format."""
    recording = Recording(**recorded.model_dump()) if recorded else None
    return Scenario(name=name, expect=tuple(entry.expect), forbid=tuple(entry.forbid),
                    max_retries=MappingProxyType(dict(entry.max_retries)), no_blind_retry=entry.no_blind_retry,
                    ends_cleanly=entry.ends_cleanly,
                    arguments=tuple(MappingProxyType(dict(a)) for a in entry.arguments), recorded=recording,
                    file=file)


def _read(path: Path) -> tuple[ScenarioFileFormat | None, list[PolicyProblem]]:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None, []  # named before the first scenario was made: no scenarios yet
    except OSError as exc:
        return None, [PolicyProblem(str(path), "", f"cannot be read: {exc}")]
    if len(raw) > MAX_SCENARIO_FILE_BYTES:
        return None, [PolicyProblem(str(path), "", f"is larger than {MAX_SCENARIO_FILE_BYTES} bytes")]
    try:
        document = yaml.safe_load(raw.decode("utf-8")) or {}
        return ScenarioFileFormat.model_validate(document), []
    except ValidationError as exc:
        return None, [PolicyProblem(str(path), ".".join(str(p) for p in e["loc"]), e["msg"]) for e in exc.errors()]
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        return None, [PolicyProblem(str(path), "", f"invalid YAML: {exc}")]


def add_scenario(path: Path, name: str, scenario: Mapping[str, Any], recorded: Mapping[str, Any]) -> bool:
    """Add one scenario to a scenario file under a lock, atomically; False when the name is taken.

    Raise ValueError when the file as it stands is not a valid scenario file (it is left as it is).
    """
    ScenarioFormat.model_validate(scenario)
    RecordedFormat.model_validate(recorded)
    with open(path.with_name(path.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            document = yaml.safe_load(path.read_text(encoding="utf-8")) if path.exists() else None
        except yaml.YAMLError as exc:
            raise ValueError(f"is not valid YAML: {exc}") from None
        document = document if isinstance(document, dict) else {}
        ScenarioFileFormat.model_validate(document)  # the file as it stands: a ValidationError is a ValueError
        scenarios, recordings = document.setdefault("scenarios", {}), document.setdefault("recorded", {})
        if name in scenarios:
            return False
        scenarios[name], recordings[name] = dict(scenario), dict(recorded)
        ScenarioFileFormat.model_validate(document)
        temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        temporary.write_text(HEADER + yaml.safe_dump(document, sort_keys=False, allow_unicode=True),
                             encoding="utf-8")
        os.replace(temporary, path)
        return True
