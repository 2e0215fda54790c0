"""Policy texts shared by the policy tests: the SPEC example file and the smallest valid policy."""

from __future__ import annotations

from pathlib import Path

POLICIES = Path(__file__).resolve().parents[2] / "policies"
EXAMPLE = POLICIES / "support-default.yaml"
MINIMAL = """
name: tiny
agents: []
stages:
  canary: {tiers: [5], caps: {tool_calls_per_session: 10, spend_per_session: 0.1}}
  expansion: {tiers: [50, 100], caps: {tool_calls_per_session: 12, spend_per_session: 0.2}}
stable_caps: {tool_calls_per_session: 30, spend_per_session: 1}
"""
