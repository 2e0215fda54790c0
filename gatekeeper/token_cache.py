"""This process's token lookups, kept while the revocation mark stays where it was (see api/auth.py)."""

from __future__ import annotations

from typing import Any

from gatekeeper.store.tokens import RevocationMark

CACHE_SECONDS = 5.0  # how long an unknown token is remembered as unknown


class MarkMoved(Exception):  # noqa: N818 - a signal between the hot path and the router, not an error
    """The revocation mark read in a decision's or outcome's transaction is not the one its caller was checked at."""

    def __init__(self, mark: int) -> None:
        super().__init__(f"the token revocation mark moved to {mark}")
        self.mark = mark


def check_mark(expected: int | None, found: int | None) -> None:
    """Raise MarkMoved when a transaction read another mark than the caller was checked at (None: not deferred)."""
    if expected is not None and (found or 0) != expected:
        raise MarkMoved(found or 0)


class TokenCache:
    """Token → caller lookups, dropped whole when the revocation mark moves."""

    def __init__(self, mark: RevocationMark) -> None:
        self.mark = mark
        self.seen_mark = -1
        self.callers: dict[str, tuple[float, Any]] = {}

    def get(self, token: str, now: float) -> tuple[bool, Any]:
        """Return (found, caller) from the cache after checking the revocation mark."""
        self.moved(self.mark.read())
        return self.peek(token, now)

    def peek(self, token: str, now: float) -> tuple[bool, Any]:
        """Return (found, caller) without reading the mark: the caller's transaction checks it (`check_mark`)."""
        hit = self.callers.get(token)
        if hit is None or (hit[1] is None and now - hit[0] >= CACHE_SECONDS):
            return False, None
        return True, hit[1]

    def moved(self, mark: int) -> None:
        """Drop every lookup when the mark is not the one they were made under."""
        if mark != self.seen_mark:
            self.callers.clear()
            self.seen_mark = mark

    def put(self, token: str, caller: Any, now: float) -> None:
        """Remember a lookup's result (None: no such token)."""
        if len(self.callers) > 10_000:
            self.callers.clear()
        self.callers[token] = (now, caller)
