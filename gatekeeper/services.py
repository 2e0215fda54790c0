"""What a Gatekeeper process holds: settings, database and policy snapshot, wired by `create_app`."""

from __future__ import annotations

from dataclasses import dataclass

from flask import current_app

from gatekeeper.config import Settings
from gatekeeper.policy_store import PolicyStore
from gatekeeper.store.db import Database


@dataclass
class Services:
    """The process-wide objects the adapters share."""

    settings: Settings
    db: Database
    policies: PolicyStore

    @classmethod
    def build(cls, settings: Settings) -> Services:
        """Create the database engine and load the policies."""
        return cls(settings=settings, db=Database(settings.database_url),
                   policies=PolicyStore(settings.policy_dir, reload_s=settings.policy_reload_s))


def services() -> Services:
    """Return the current app's services."""
    found: Services = current_app.extensions["gatekeeper"]
    return found
