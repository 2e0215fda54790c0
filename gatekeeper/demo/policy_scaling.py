"""Scale the example policies' durations and volumes down so a rollout walks every stage in minutes.

Production policies soak for hours and want hundreds of sessions; the demo keeps every rule,
tool class, cap and threshold as written and changes only the numbers below, and prints them.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

# field path -> demo value; everything not named here stays as the policy says.
DEMO_OVERRIDES: dict[tuple[str, ...], Any] = {
    ("gate", "interval"): "1s",
    ("gate", "window"): "20s",
    ("gate", "soak"): "6s",
    ("gate", "min_sessions"): 5,
    # The in-path kill switch answers a spike within seconds; the gate judges slower regressions.
    ("gate", "failure_limit"): 10,
    ("stages", "twin", "gate", "min_runs"): 12,
    ("stages", "twin", "gate", "min_pass_rate"): 0.9,
    ("stages", "shadow", "gate", "min_sessions"): 10,
    ("stages", "shadow", "gate", "soak"): "6s",
    ("stages", "shadow", "gate", "min_agreement"): 0.5,
    ("stages", "shadow", "gate", "max_violation_rate"): 0.5,
    ("kill_switch", "window"): "10s",
    ("kill_switch", "min_calls"): 12,
    # A small simulated fleet gives a 1% tier too few sessions to judge within minutes.
    ("stages", "canary", "tiers"): [10, 25],
    ("stages", "expansion", "tiers"): [50, 75, 100],
    ("approvals", "expire_after"): "30m",
}
# Per-stage gate keys that would undo the scaling above.
_STAGE_GATE_KEYS = ("soak", "min_sessions", "window", "interval")


def scale_policy(document: dict[str, Any], *, keep_queries: bool) -> dict[str, Any]:
    """Return a copy of a parsed policy document with demo-sized durations and volumes."""
    scaled = copy.deepcopy(document)
    for path, value in DEMO_OVERRIDES.items():
        _set(scaled, path, value)
    for stage in ("canary", "expansion"):
        gate = scaled.get("stages", {}).get(stage, {}).get("gate", {})
        for key in _STAGE_GATE_KEYS:
            gate.pop(key, None)
    if not keep_queries:
        # The built-in metrics source answers the standard checks, not arbitrary PromQL.
        scaled.get("gate", {}).pop("queries", None)
        for stage in ("canary", "expansion"):
            scaled.get("stages", {}).get(stage, {}).get("gate", {}).pop("queries", None)
    return scaled


def write_demo_policies(source: Path, target: Path, *, keep_queries: bool) -> list[Path]:
    """Write scaled copies of every policy in `source` into `target`; return their paths."""
    target.mkdir(parents=True, exist_ok=True)
    written = []
    for path in sorted(source.glob("*.y*ml")):
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
        header = f"# Demo copy of {path.name}: durations and volumes scaled down by `gatekeeper demo`.\n"
        out = target / path.name
        out.write_text(header + yaml.safe_dump(scale_policy(document, keep_queries=keep_queries),
                                               sort_keys=False), encoding="utf-8")
        written.append(out)
    return written


def describe_overrides() -> str:
    """Return the scaling as one line for the terminal."""
    return ", ".join(f"{'.'.join(path)}={value}" for path, value in DEMO_OVERRIDES.items())


def _set(document: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    node = document
    for key in path[:-1]:
        node = node.setdefault(key, {})
    node[path[-1]] = value
