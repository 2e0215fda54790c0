"""Policies reload without a restart; a broken edit keeps the last good revision in force."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from gatekeeper.policy_files import policy_revision
from gatekeeper.policy_store import PolicyStore
from tests.support.app import POLICIES, svc


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    target = tmp_path / "policies"
    target.mkdir()
    shutil.copy(POLICIES / "support-default.yaml", target)
    return target


def edit(path: Path, old: str, new: str) -> str:
    text = path.read_text().replace(old, new, 1)
    assert old in path.read_text()
    path.write_text(text)
    return text


def test_changed_file_is_picked_up_after_the_reload_interval(folder: Path) -> None:
    clock = Clock()
    store = PolicyStore(folder, reload_s=2.0, clock=clock)
    first = store.get("support-default")
    text = edit(folder / "support-default.yaml", "tiers: [1, 5]", "tiers: [2, 5]")
    clock.now = 1.0
    assert store.get("support-default").revision == first.revision  # not due yet
    clock.now = 2.5
    reloaded = store.get("support-default")
    assert reloaded.revision == policy_revision(text) != first.revision
    assert reloaded.policy.canary.tiers == (2.0, 5.0)


def test_broken_edit_keeps_the_last_good_revision(folder: Path) -> None:
    clock = Clock()
    store = PolicyStore(folder, reload_s=1.0, clock=clock)
    good = store.get("support-default")
    edit(folder / "support-default.yaml", "tiers: [1, 5]", "tiers: [5, 1]")
    clock.now = 5.0
    assert store.get("support-default") == good
    assert any("tiers" in p.path for p in store.snapshot().problems)


def test_transitions_record_the_revision_in_force(folder: Path, client: FlaskClient, rm: dict[str, str],
                                                  app: Flask) -> None:
    store = svc(app).policies
    store.folder, store.reload_s = folder, 0.0
    client.post("/v1/agents", json={"name": "support-bot", "policy": "support-default"}, headers=rm)
    client.post("/v1/agents/support-bot/rollouts", json={"version": "v2"}, headers=rm)
    text = edit(folder / "support-default.yaml", "tiers: [1, 5]", "tiers: [2, 5]")
    promoted = client.post("/v1/agents/support-bot/promote", json={"reason": "go"}, headers=rm).json
    assert promoted["transition"]["policy_revision"] == policy_revision(text)
    history = client.get("/v1/agents/support-bot/history", headers=rm).json["items"]
    assert history[0]["policy_revision"] != history[1]["policy_revision"]
