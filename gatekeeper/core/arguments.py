"""A tool call's arguments: canonical JSON, the digest that binds an approval, redaction for people.

The canonical form (SPEC §2) is JSON with sorted keys, no spaces, UTF-8 (non-ASCII characters
as themselves, control characters escaped), and no NaN or infinities. Its SHA-256 is the
arguments' digest: an approval is valid for exactly the call whose digest it carries.
Approvers and traces see the arguments with the policy's `approvals.redact` field names
masked at any depth, matched case-insensitively, so `Password` is masked by `password`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

MAX_ARGUMENTS_BYTES = 16 * 1024  # serialised, canonical form (SPEC §5)
MASK = "[redacted]"
_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def canonical(arguments: Mapping[str, Any]) -> bytes:
    """Return the canonical JSON of the arguments; raise ValueError when they have no JSON form."""
    try:
        return _ENCODER.encode(arguments).encode("utf-8")
    except (TypeError, RecursionError) as exc:
        raise ValueError(f"cannot be written as JSON: {exc}") from None
    except UnicodeEncodeError:
        raise ValueError("holds a string that is not valid Unicode (a lone surrogate)") from None
    except ValueError:  # allow_nan=False
        raise ValueError("holds NaN or an infinite number, which JSON cannot carry") from None


def digest(arguments: Mapping[str, Any]) -> str:
    """Return the SHA-256 (hex) of the arguments' canonical JSON."""
    return hashlib.sha256(canonical(arguments)).hexdigest()


def redact(value: Any, fields: Iterable[str]) -> Any:
    """Return a copy of the value with every mapping entry named in `fields` masked, at any depth."""
    names = frozenset(name.lower() for name in fields)
    return _masked(value, names) if names else value


def _masked(value: Any, names: frozenset[str]) -> Any:
    if isinstance(value, Mapping):
        return {key: MASK if str(key).lower() in names else _masked(item, names) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_masked(item, names) for item in value]
    return value


@dataclass(frozen=True)
class Bound:
    """The arguments as a decision stores them: redacted canonical JSON and the unredacted digest."""

    redacted: str
    digest: str


def bind(arguments: Mapping[str, Any], *, redact_fields: Iterable[str]) -> Bound:
    """Return what a decision and its approval keep of the arguments."""
    return Bound(canonical(redact(arguments, redact_fields)).decode("utf-8"), digest(arguments))


def check_size(arguments: Mapping[str, Any]) -> None:
    """Raise ValueError when the arguments have no canonical form or it is larger than 16 KiB."""
    size = len(canonical(arguments))
    if size > MAX_ARGUMENTS_BYTES:
        raise ValueError(f"must be at most {MAX_ARGUMENTS_BYTES} bytes as canonical JSON, not {size}")
