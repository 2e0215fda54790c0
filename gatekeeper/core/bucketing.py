"""Sticky, deterministic assignment of sessions to the candidate or the stable arm.

A session's bucket is a hash of `agent:rollout_id:session_key` into 10,000 buckets, as
Unleash and LaunchDarkly do. The candidate serves buckets `[0, percent * 100)`, so the same
key always lands in the same arm for a given rollout and tier, and raising the tier only
moves stable buckets to the candidate, never the reverse.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from gatekeeper.core.vocabulary import LIVE_STATES

BUCKETS = 10_000


@dataclass(frozen=True)
class RolloutFacts:
    """What assignment needs of the agent's active rollout."""

    id: int
    stage: str
    state: str
    traffic_percent: float  # the candidate's share of live sessions at this tier
    shadow_percent: float  # share of live sessions mirrored in shadow


@dataclass(frozen=True)
class Assignment:
    """Which arm serves a new session, at which stage, and whether the candidate mirrors it."""

    arm: str
    stage: str | None
    mirror: bool = False


def bucket(agent: str, rollout_id: int, session_key: str) -> int:
    """Return the session key's bucket in [0, 10,000) for this agent and rollout."""
    digest = hashlib.sha256(f"{agent}:{rollout_id}:{session_key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % BUCKETS


def within(bucket_: int, percent: float) -> bool:
    """Return whether a bucket falls inside the first `percent` of all buckets."""
    return bucket_ < round(percent * BUCKETS / 100)


def assign(rollout: RolloutFacts | None, *, environment: str, bucket_: int, twin_arm: str = "candidate"
           ) -> Assignment:
    """Choose the arm of a new session from the rollout's current stage and tier (a twin run's: `twin_arm`)."""
    if rollout is None or rollout.state not in LIVE_STATES:
        return Assignment("stable", rollout.stage if rollout else None)
    if environment == "twin":
        return Assignment(twin_arm, "twin")
    if rollout.stage == "shadow":
        return Assignment("stable", "shadow", mirror=within(bucket_, rollout.shadow_percent))
    if rollout.stage in ("canary", "expansion") and within(bucket_, rollout.traffic_percent):
        return Assignment("candidate", rollout.stage)
    return Assignment("stable", rollout.stage)
