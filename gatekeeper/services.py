"""What a Gatekeeper process holds, wired once by `create_app` (or a CLI command) and passed down.

Routes reach it through `services()`; use cases take it as their first argument. Nothing else
is kept on the Flask app: a route module never tucks its own objects into `app.extensions`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from flask import current_app
from prometheus_client import CollectorRegistry

from gatekeeper.config import Settings
from gatekeeper.exported_metrics import Metrics
from gatekeeper.policy_store import PolicyStore
from gatekeeper.store.db import Database
from gatekeeper.store.hot_path import HotPath
from gatekeeper.store.tokens import RevocationMark
from gatekeeper.token_cache import TokenCache


@dataclass
class Services:
    """The process-wide objects the adapters share: database, hot path, policies, metrics, clock."""

    settings: Settings
    db: Database
    policies: PolicyStore
    hot: HotPath
    metrics: Metrics
    tokens: TokenCache
    clock: Callable[[], float] = field(default=time.time)

    @classmethod
    def build(cls, settings: Settings) -> Services:
        """Create the database engine, the hot path's connections, the metrics, and load the policies."""
        db = Database(settings.database_url)
        return cls(settings=settings, db=db,
                   policies=PolicyStore(settings.policy_dir, reload_s=settings.policy_reload_s),
                   hot=HotPath(db), metrics=Metrics(CollectorRegistry()), tokens=TokenCache(RevocationMark(db)))


def services() -> Services:
    """Return the current app's services."""
    found: Services = current_app.extensions["gatekeeper"]
    return found
