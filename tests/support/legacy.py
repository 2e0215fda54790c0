"""A database made by the code of commit ed52833 (schema 2, before Alembic), with rows in every table.

`build_legacy_database(url, workdir)` exports that commit's `gatekeeper/` package with `git archive`
and runs `legacy_seed.py` against it in a subprocess, so the schema is made by the old code's own
`Database.upgrade()` (create_all and the `schema_version` table) and the rows below go in through
the old models' tables. Tests then upgrade the database with today's code and compare.
Needs git and the repository's history (CI runs in a full clone); without them the test fails
under CI=true and is skipped loudly otherwise.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

from tests.support.services import find_binary, missing

REPO = Path(__file__).resolve().parents[2]
LEGACY_COMMIT = "ed52833"  # "schema 2": the last schema made by the hand-made upgrade
LEGACY_TOKEN = "gk_legacy-release-manager"  # plaintext of the legacy release manager's token
POLICY_REVISION = "support-default@20b9f4570420"

# Rows of every table, in foreign-key order. Integer ids are left to the database (1, 2, ... on a
# fresh one), as the old code left them, so that the sequences behind them are what it left too.
ROWS: dict[str, list[dict[str, Any]]] = {
    "agents": [
        {"name": "support-bot", "policy": "support-default", "stable_version": "v1", "rollout_id": 1,
         "created_at": 1_700_000_000.25},
        {"name": "billing-agent", "policy": "billing", "stable_version": None, "rollout_id": None,
         "created_at": 1_700_000_001.5},
    ],
    "versions": [
        {"agent_id": 1, "label": "v1", "created_at": 1_700_000_000.25},
        {"agent_id": 1, "label": "v2", "created_at": 1_700_000_100.0},
    ],
    "rollouts": [
        {"agent_id": 1, "candidate_version": "v2", "stable_version": "v1", "stage": "canary", "tier": 1,
         "state": "progressing", "state_reason": "tier gate: every check passed", "tier_started_at": 1_700_000_500.0,
         "started_at": 1_700_000_100.0, "updated_at": 1_700_000_500.0, "ended_at": None,
         "policy_revision": POLICY_REVISION, "kill_switch_open": False, "consecutive_failures": 0,
         "consecutive_errors": 2},
    ],
    "transitions": [
        {"rollout_id": 1, "agent_id": 1, "at": 1_700_000_100.0, "actor": "alice", "action": "start",
         "reason": "ship v2 — with a non-ASCII reason", "from_stage": None, "from_tier": None, "from_state": None,
         "to_stage": "twin", "to_tier": 0, "to_state": "progressing", "traffic_percent": 0.0,
         "policy_revision": POLICY_REVISION, "metrics": "{}"},
        {"rollout_id": 1, "agent_id": 1, "at": 1_700_000_500.0, "actor": "scheduler", "action": "promote",
         "reason": "tier gate: every check passed", "from_stage": "canary", "from_tier": 0,
         "from_state": "progressing", "to_stage": "canary", "to_tier": 1, "to_state": "progressing",
         "traffic_percent": 5.0, "policy_revision": POLICY_REVISION, "metrics": '{"error_rate": 0.01}'},
    ],
    "gate_evaluations": [
        {"rollout_id": 1, "agent_id": 1, "at": 1_700_000_499.0, "stage": "canary", "tier": 0,
         "window_key": "canary/0/1700000499", "result": "promote", "report": '{"checks": []}',
         "policy_revision": POLICY_REVISION},
    ],
    "policy_revisions": [
        {"revision": POLICY_REVISION, "name": "support-default", "path": "policies/support-default.yaml",
         "text": "name: support-default\nagents: [support-bot]\n", "first_seen_at": 1_700_000_000.0},
    ],
    "tokens": [
        {"name": "alice", "token_hash": hashlib.sha256(LEGACY_TOKEN.encode()).hexdigest(),
         "role": "release_manager", "agent": None, "created_at": 1_700_000_000.0, "revoked_at": None},
        {"name": "support-bot", "token_hash": "0" * 64, "role": "agent", "agent": "support-bot",
         "created_at": 1_700_000_000.0, "revoked_at": 1_700_000_050.0},
    ],
    "users": [
        {"username": "alice", "password_hash": "scrypt:32768:8:1$salt$" + "a" * 128, "role": "release_manager",
         "created_at": 1_700_000_000.0},
    ],
    "sessions": [
        {"id": "s-candidate", "agent_id": 1, "rollout_id": 1, "version": "v2", "arm": "candidate",
         "stage": "canary", "environment": "live", "session_key": "customer-42", "scenario": None,
         "mirror_of": None, "cap_tool_calls": 20, "cap_spend_micros": 500_000, "tool_calls": 2,
         "spend_micros": 30_000, "status": "open", "passed": None, "twin_snapshot_at": None,
         "started_at": 1_700_000_600.0, "ended_at": None},
        {"id": "s-twin", "agent_id": 1, "rollout_id": 1, "version": "v2", "arm": "candidate", "stage": "twin",
         "environment": "twin", "session_key": "twin-1", "scenario": "refund-request", "mirror_of": None,
         "cap_tool_calls": 20, "cap_spend_micros": 500_000, "tool_calls": 3, "spend_micros": 0, "status": "ok",
         "passed": True, "twin_snapshot_at": 1_699_999_000.0, "started_at": 1_700_000_200.0,
         "ended_at": 1_700_000_230.0},
    ],
    "decisions": [
        {"id": "d-reported", "session_id": "s-candidate", "agent_id": 1, "rollout_id": 1, "version": "v2",
         "arm": "candidate", "stage": "canary", "tool": "search_kb", "tool_class": "read_only", "cost_micros": 10_000,
         "verdict": "allow", "reason": "", "would_verdict": None, "would_reason": None, "approval_id": None,
         "preview": None, "at": 1_700_000_601.0, "outcome_status": "ok", "actual_cost_micros": 9_500,
         "latency_ms": 231.5, "outcome_at": 1_700_000_601.25},
        {"id": "d-waiting", "session_id": "s-candidate", "agent_id": 1, "rollout_id": 1, "version": "v2",
         "arm": "candidate", "stage": "canary", "tool": "refund_payment", "tool_class": "irreversible",
         "cost_micros": 20_000, "verdict": "approval_required", "reason": "approval_required",
         "would_verdict": None, "would_reason": None, "approval_id": "a-pending",
         "preview": "refund 12.50 EUR to customer-42", "at": 1_700_000_602.0, "outcome_status": None,
         "actual_cost_micros": None, "latency_ms": None, "outcome_at": None},
    ],
    "approvals": [
        {"id": "a-pending", "agent_id": 1, "session_id": "s-candidate", "rollout_id": 1, "version": "v2",
         "tool": "refund_payment", "tool_class": "irreversible", "cost_micros": 20_000,
         "preview": "refund 12.50 EUR to customer-42", "state": "pending", "created_at": 1_700_000_602.0,
         "expires_at": 1_700_001_502.0, "decided_by": None, "decided_at": None, "decision_reason": None,
         "consumed_at": None},
    ],
    "alert_receipts": [
        {"fingerprint": "4f2c1a", "starts_at": "2023-11-14T22:13:20Z", "agent": "support-bot",
         "alertname": "CandidateErrorRate", "action": "hold", "received_at": 1_700_000_700.0},
    ],
    "leases": [
        {"name": "scheduler", "holder": "host-1:4242", "expires_at": 1_700_000_730.0},
    ],
    "notifications": [
        {"transition_id": 2, "payload": '{"action": "promote"}', "attempts": 1, "next_attempt_at": 1_700_000_560.0,
         "delivered_at": None, "last_error": "HTTP 502 from the webhook"},
    ],
}
# Tables whose integer ids the database assigned (the rows above carry none).
AUTO_ID_TABLES = {"agents", "versions", "rollouts", "transitions", "gate_evaluations", "tokens", "users",
                  "alert_receipts", "notifications"}


def export_legacy_package(dest: Path) -> Path:
    """Export commit ed52833's `gatekeeper/` package into `dest` and return `dest`."""
    git = find_binary("git")
    if git is None or not (REPO / ".git").exists():
        missing("git and the repository's history are needed to build the ed52833 database")
    done = subprocess.run([git, "-C", str(REPO), "archive", "--format=tar", LEGACY_COMMIT, "gatekeeper"],
                          capture_output=True, timeout=60, check=False)
    if done.returncode != 0:
        missing(f"commit {LEGACY_COMMIT} is not in this clone (a shallow clone?): {done.stderr.decode()[-300:]}")
    with tarfile.open(fileobj=io.BytesIO(done.stdout)) as archive:
        archive.extractall(dest, filter="data")
    return dest


def build_legacy_database(url: str, workdir: Path, *, version: int = 2) -> None:
    """Make the schema with ed52833's code at `url`, insert ROWS through its models; optionally set version 1."""
    package = export_legacy_package(workdir / f"gatekeeper-{LEGACY_COMMIT}")
    env = {**os.environ, "PYTHONPATH": str(package)}
    # -P: the script's folder holds an http.py that must not hide the standard library's
    done = subprocess.run([sys.executable, "-P", str(Path(__file__).with_name("legacy_seed.py")), url, str(version)],
                          input=json.dumps(ROWS).encode(), env=env, cwd=workdir, capture_output=True, timeout=120,
                          check=False)
    assert done.returncode == 0, f"the ed52833 seed failed:\n{done.stderr.decode()[-3000:]}"
