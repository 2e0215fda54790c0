"""The value types of a policy file: durations, dollars, rates, percentages, slugs, tool classes.

Each is an annotated type whose validator converts the YAML value into the policy model's unit
(durations to float seconds, dollars to int micro-dollars) or raises the plain message that
`gatekeeper policy check` prints; each carries its JSON Schema. `Problems` lets one validator
report several problems, each with its path below the value it checked.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable, Sequence
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema, model_validator

from gatekeeper.core.policy import (
    ALERT_ACTIONS,
    SEVERITIES,
    AlertAction,
    Severity,
    parse_duration,
    parse_money,
)
from gatekeeper.core.vocabulary import TOOL_CLASSES, ToolClass

SLUG_PATTERN = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")


def raw(default: object) -> Any:
    """Mark a default written in YAML units: validate_default=True converts it like a given value."""
    return default


class Problems(ValueError):
    """Several problems found by one validator, each as (path below the validated value, message)."""

    def __init__(self, problems: Sequence[tuple[str, str]]) -> None:
        self.problems = tuple(problems)
        super().__init__("; ".join(f"{path}: {message}" if path else message for path, message in self.problems))


def kind(value: object) -> str:
    """Name a YAML value's type the way a policy author reads it."""
    names = {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean", int: "a number"}
    names.update({float: "a number", type(None): "empty"})
    return names.get(type(value), f"a {type(value).__name__}")


# -- scalar types: each validator raises the plain message `policy check` prints -----------


def between(low: float, high: float, *, low_open: bool = False) -> Callable[[object], float]:
    def check(value: object) -> float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        if ok and (value > low if low_open else value >= low) and value <= high:  # type: ignore[operator]
            return float(value)  # type: ignore[arg-type]
        raise ValueError(f"must be a number between {low:g} and {high:g}, not {value!r}")

    return check


def _whole(minimum: int) -> Callable[[object], int]:
    def check(value: object) -> int:
        if isinstance(value, int) and not isinstance(value, bool) and value >= minimum:
            return value
        raise ValueError(f"must be a whole number of at least {minimum}, not {value!r}")

    return check


def _duration(*, positive: bool) -> Callable[[object], float]:
    def check(value: object) -> float:
        seconds = parse_duration(value)  # type: ignore[arg-type]
        if positive and seconds <= 0:
            raise ValueError(f"must be longer than zero, not {value!r}")
        return seconds

    return check


def choice(options: Sequence[str], what: str) -> Callable[[object], str]:
    def check(value: object) -> str:
        if isinstance(value, str) and value in options:
            return value
        close = difflib.get_close_matches(str(value), options, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ValueError(f"unknown {what} {value!r}{hint}; expected one of: {', '.join(options)}")

    return check


def _text(value: object) -> str:
    if isinstance(value, str) and value.strip():
        return value
    raise ValueError(f"must be a non-empty string, not {kind(value)}")


def _slug(value: object) -> str:
    if isinstance(value, str) and SLUG_PATTERN.fullmatch(value):
        return value
    raise ValueError(f"must be a slug of lowercase letters, digits and dashes (at most 63), not {value!r}")


def unique(items: list[Any]) -> list[Any]:
    twice = [(f"[{i}]", f"{item!r} is listed twice") for i, item in enumerate(items) if item in items[:i]]
    if twice:
        raise Problems(twice)
    return items


def mapping_or_empty(value: object) -> object:
    """`tools:` with nothing under it means an empty mapping, as a section with nothing under it means defaults."""
    return {} if value is None else value


_DURATION_SCHEMA = {
    "type": "string",
    "pattern": r"^\s*(0|(\d+(\.\d+)?(ms|s|m|h|d))+)\s*$",
    "examples": ["30s", "10m", "1h30m", "2d"],
}
_MONEY_SCHEMA = {"anyOf": [{"type": "number", "minimum": 0}, {"type": "string", "pattern": r"^\s*\d+(\.\d{1,6})?\s*$"}]}

Text = Annotated[str, Field(min_length=1), BeforeValidator(_text)]
Slug = Annotated[str, Field(pattern=f"^{SLUG_PATTERN.pattern}$"), BeforeValidator(_slug)]
Rate = Annotated[float, Field(ge=0, le=1), BeforeValidator(between(0, 1))]
Percent = Annotated[float, Field(gt=0, le=100), BeforeValidator(between(0, 100, low_open=True))]
Duration = Annotated[float, BeforeValidator(_duration(positive=False)), WithJsonSchema(_DURATION_SCHEMA)]
PositiveDuration = Annotated[float, BeforeValidator(_duration(positive=True)), WithJsonSchema(_DURATION_SCHEMA)]
Money = Annotated[int, BeforeValidator(parse_money), WithJsonSchema(_MONEY_SCHEMA)]
Count0 = Annotated[int, Field(ge=0), BeforeValidator(_whole(0))]
Count1 = Annotated[int, Field(ge=1), BeforeValidator(_whole(1))]
ToolClassName = Annotated[ToolClass, BeforeValidator(choice(TOOL_CLASSES, "tool class"))]
ToolClasses = Annotated[list[ToolClassName], Field(json_schema_extra={"uniqueItems": True}), AfterValidator(unique)]
AlertActionName = Annotated[AlertAction, BeforeValidator(choice(ALERT_ACTIONS, "action"))]
SeverityName = Annotated[Severity, BeforeValidator(choice(SEVERITIES, "severity"))]
UniqueSlugs = Annotated[list[Slug], Field(json_schema_extra={"uniqueItems": True}), AfterValidator(unique)]
UniqueTexts = Annotated[list[Text], Field(json_schema_extra={"uniqueItems": True}), AfterValidator(unique)]


def _ascending(tiers: list[float], *, to_100: bool = False) -> list[float]:
    wrong = [
        (f"[{i}]", f"must be greater than the tier before it ({tiers[i - 1]:g})")
        for i in range(1, len(tiers))
        if tiers[i] <= tiers[i - 1]
    ]
    if to_100 and tiers[-1] != 100:
        wrong.append((f"[{len(tiers) - 1}]", "the last expansion tier must be 100"))
    if wrong:
        raise Problems(wrong)
    return tiers


Tiers = Annotated[list[Percent], Field(min_length=1), AfterValidator(_ascending)]
TiersTo100 = Annotated[list[Percent], Field(min_length=1), AfterValidator(lambda tiers: _ascending(tiers, to_100=True))]


class Section(BaseModel):
    """A mapping of the policy file: unknown keys are refused, an empty section means all defaults."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    @model_validator(mode="before")
    @classmethod
    def _a_mapping(cls, value: object) -> object:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise ValueError(f"must be a mapping, not {kind(value)}")
        return value
