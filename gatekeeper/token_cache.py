"""This process's token lookups, kept while the revocation mark stays where it was (see api/auth.py)."""

from __future__ import annotations

from typing import Any

from gatekeeper.store.tokens import RevocationMark

CACHE_SECONDS = 5.0  # how long an unknown token is remembered as unknown


class TokenCache:
    """Token → caller lookups, dropped whole when the revocation mark moves."""

    def __init__(self, mark: RevocationMark) -> None:
        self.mark = mark
        self.seen_mark = -1
        self.callers: dict[str, tuple[float, Any]] = {}

    def get(self, token: str, now: float) -> tuple[bool, Any]:
        """Return (found, caller) from the cache after checking the revocation mark."""
        mark = self.mark.read()
        if mark != self.seen_mark:
            self.callers.clear()
            self.seen_mark = mark
        hit = self.callers.get(token)
        if hit is None or (hit[1] is None and now - hit[0] >= CACHE_SECONDS):
            return False, None
        return True, hit[1]

    def put(self, token: str, caller: Any, now: float) -> None:
        """Remember a lookup's result (None: no such token)."""
        if len(self.callers) > 10_000:
            self.callers.clear()
        self.callers[token] = (now, caller)
