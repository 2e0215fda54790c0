"""Policy problems: each with its file, field path (`stages.canary.tiers[1]`) and a plain message.

`problems_from` turns pydantic's validation errors over `PolicyFormat` into problems: locations
become field paths (union tags and key markers dropped), error types become the messages
`gatekeeper policy check` prints, a `Problems` raised by a validator becomes one problem per
entry, and a section's unknown keys come before its other problems, as a reader meets them.
"""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from gatekeeper.policy_fields import Problems, kind
from gatekeeper.policy_format import TAGS, PolicyFormat


@dataclass(frozen=True)
class PolicyProblem:
    file: str
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}: {self.path}: {self.message}" if self.path else f"{self.file}: {self.message}"


class PolicyError(Exception):
    """A policy file has one or more problems; `problems` lists them all."""

    def __init__(self, problems: Sequence[PolicyProblem]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(str(problem) for problem in self.problems))


def _path(loc: Iterable[int | str]) -> str:
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        elif part not in TAGS and part != "[key]":
            text += f".{part}" if text else part
    return text


def _join(path: str, sub: str) -> str:
    if not sub:
        return path
    return path + sub if not path or sub.startswith("[") else f"{path}.{sub}"


def _known_keys(loc: Sequence[int | str]) -> list[str]:
    """Return the keys the section at `loc` (a pydantic location, tags included) accepts."""
    node: Any = PolicyFormat
    for part in loc:
        node = _unwrap(node, part)
        if part in TAGS:
            continue
        if isinstance(node, type) and issubclass(node, BaseModel):
            node = next((f.annotation for n, f in node.model_fields.items() if (f.alias or n) == part), None)
        elif typing.get_origin(node) in (dict, list):
            node = typing.get_args(node)[-1]
    node = _unwrap(node, None)
    is_section = isinstance(node, type) and issubclass(node, BaseModel)
    return [f.alias or n for n, f in node.model_fields.items()] if is_section else []


def _unwrap(node: Any, part: int | str | None) -> Any:
    """Step through Annotated, Optional and (by its tag) a tagged union without using a location part."""
    while True:
        if typing.get_origin(node) is typing.Annotated:
            node = typing.get_args(node)[0]
        elif typing.get_origin(node) in (typing.Union, types.UnionType):
            members = [m for m in typing.get_args(node) if m is not type(None)]
            tagged = [
                m for m in members if any(getattr(x, "tag", None) == part for x in getattr(m, "__metadata__", ()))
            ]
            if part in TAGS and tagged:
                return tagged[0]
            node = members[0]
        else:
            return node


Found = tuple[tuple[int | str, ...], bool, PolicyProblem]  # (pydantic location, is an unknown key, problem)


def problems_from(exc: ValidationError, file: str) -> list[PolicyProblem]:
    """Return a problem for each error pydantic found in a policy document, unknown keys first."""
    found: list[Found] = []
    for error in exc.errors(include_url=False):
        loc, path = error["loc"], _path(error["loc"])
        cause = (error.get("ctx") or {}).get("error")
        if isinstance(cause, Problems):
            found += [(loc, False, PolicyProblem(file, _join(path, sub), message)) for sub, message in cause.problems]
        else:
            found.append((loc, error["type"] == "extra_forbidden", PolicyProblem(file, path, _message(error))))
    return _unknown_keys_first(found)


def _message(error: Any) -> str:
    kind_of = kind(error.get("input"))
    if error["type"] == "missing":
        return "is required"
    if error["type"] == "extra_forbidden":
        return _unknown_key(error["loc"])
    if error["type"] in ("list_type", "tuple_type"):
        return f"must be a list, not {kind_of}"
    if error["type"] in ("dict_type", "model_type", "model_attributes_type"):
        return f"must be a mapping, not {kind_of}"
    if error["type"] == "too_short":
        return "must not be empty"
    if error["type"] == "value_error":
        return str(error["ctx"]["error"])
    return str(error["msg"])


def _unknown_key(loc: Sequence[int | str]) -> str:
    key, known = str(loc[-1]), _known_keys(loc[:-1])
    close = difflib.get_close_matches(key, known, n=1)
    return f"unknown key '{key}'" + (
        f" (did you mean '{close[0]}'?)" if close else f"; expected one of: {', '.join(known)}"
    )


def _unknown_keys_first(found: list[Found]) -> list[PolicyProblem]:
    """Put a section's unknown keys before its other problems, as a reader meets them (pydantic lists them last)."""
    ordered: list[Found] = []
    for loc, unknown, problem in found:
        parent = loc[:-1]
        inside = (i for i, (at, other, _) in enumerate(ordered) if not other and at[: len(parent)] == parent)
        ordered.insert(next(inside, len(ordered)) if unknown else len(ordered), (loc, unknown, problem))
    return [problem for _, _, problem in ordered]
