"""The kill switch's trip condition: the candidate's error rate over the policy's window.

It trips when at least `min_calls` outcomes were reported in the window and the share of
errors among them is above `max_error_rate`. Too few calls never trips it: one early error
is noise, not a spike.
"""

from __future__ import annotations

from gatekeeper.core.policy import KillSwitch


def trips(policy: KillSwitch, *, calls: int, errors: int) -> bool:
    """Return whether these counts over the window trip the kill switch."""
    return calls >= policy.min_calls and calls > 0 and errors / calls > policy.max_error_rate


def window_start(policy: KillSwitch, *, now: float) -> float:
    """Return the earliest outcome time that counts."""
    return now - policy.window_s
