"""One Settings object, read from GATEKEEPER_* environment variables once and validated at start.

| variable | default | meaning |
|---|---|---|
| GATEKEEPER_DATABASE_URL | sqlite:///gatekeeper.db | sqlite:///PATH or postgresql://USER@HOST/DB (psycopg 3) |
| GATEKEEPER_POLICY_DIR | ./policies if present, else the example policies in the package | folder of *.yaml policies |
| GATEKEEPER_POLICY_RELOAD | 2s | how often a process looks for changed policy files |
| GATEKEEPER_SECRET_KEY | kept in the database | signs dashboard cookies; every worker and replica shares it |
| GATEKEEPER_PROMETHEUS_URL | (none) | Prometheus base URL; without it the built-in metrics source is used |
| GATEKEEPER_PROMETHEUS_TIMEOUT | 5s | timeout of one PromQL query |
| GATEKEEPER_PROMETHEUS_FAIL_MAX | 3 | failed queries in a row that open the circuit breaker |
| GATEKEEPER_PROMETHEUS_RESET_TIMEOUT | 30s | an open breaker's wait before its trial query (each cycle also probes) |
| GATEKEEPER_SIGNIN_MAX_FAILURES | 5 | failed sign-ins per user and per address in the window before refusal |
| GATEKEEPER_SIGNIN_WINDOW | 5m | the sign-in throttle's window |
| GATEKEEPER_WEBHOOK_URLS | (none) | comma-separated URLs notified of every transition |
| GATEKEEPER_MAX_BODY_BYTES | 65536 | largest accepted request body |
| GATEKEEPER_RETENTION | 30d | sessions, decisions and gate evaluations older than this are pruned (rolled up first) |
| GATEKEEPER_RETENTION_BATCH | 100 | most sessions per pruning transaction (sized to ~5 ms); evaluations 10x |
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from gatekeeper.core.policy import parse_duration
from gatekeeper.errors import ConfigError

DEFAULT_DATABASE_URL = "sqlite:///gatekeeper.db"
POSTGRES_DRIVER = "postgresql+psycopg"  # psycopg 3, the `postgres` extra
# Every spelling of a database URL accepted, and the SQLAlchemy driver it runs on.
DATABASE_DRIVERS = {"sqlite": "sqlite", "sqlite+pysqlite": "sqlite", "postgresql": POSTGRES_DRIVER,
                    "postgres": POSTGRES_DRIVER, "postgresql+psycopg2": POSTGRES_DRIVER,
                    "postgresql+psycopg": POSTGRES_DRIVER}
URL_FORMS = "sqlite:///PATH or postgresql://USER@HOST/DB"


def database_url(raw: str) -> str:
    """Return the URL to connect with, Postgres on psycopg 3; raise ConfigError naming the variable if unusable."""
    try:
        url = make_url(raw)
    except (ArgumentError, ValueError):
        raise ConfigError(f"GATEKEEPER_DATABASE_URL is not a database URL; use {URL_FORMS}") from None
    driver = DATABASE_DRIVERS.get(url.drivername)
    if driver is None:
        raise ConfigError(f"GATEKEEPER_DATABASE_URL scheme {url.drivername!r} is not supported; use {URL_FORMS}")
    if not url.database:
        raise ConfigError(f"GATEKEEPER_DATABASE_URL names no database; use {URL_FORMS}")
    scheme, rest = raw.split(":", 1)  # keep the rest byte for byte: re-rendering would re-quote it
    return raw if scheme == driver else f"{driver}:{rest}"


def embedded_policy_dir() -> Path:
    """Return the folder of example policies shipped with Gatekeeper."""
    packaged = Path(__file__).parent / "example_policies"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parent.parent / "policies"


def _default_policy_dir() -> Path:
    local = Path.cwd() / "policies"
    return local if local.is_dir() else embedded_policy_dir()


@dataclass(frozen=True)
class Settings:
    """Process-wide configuration; build it with `Settings.from_env()` or directly in tests."""

    database_url: str = DEFAULT_DATABASE_URL
    policy_dir: Path = field(default_factory=_default_policy_dir)
    policy_reload_s: float = 2.0
    secret_key: str | None = None  # None: the key made once and kept in the database
    prometheus_url: str | None = None
    prometheus_timeout_s: float = 5.0
    prometheus_fail_max: int = 3
    prometheus_reset_timeout_s: float = 30.0
    signin_max_failures: int = 5
    signin_window_s: float = 300.0
    webhook_urls: tuple[str, ...] = ()
    max_body_bytes: int = 65536
    retention_s: float = 30 * 86_400.0
    retention_batch: int = 100

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read GATEKEEPER_* variables, failing with ConfigError on a bad value."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        try:
            _read_env(env, values)
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc
        return cls(**values).validated()

    def with_overrides(self, overrides: Mapping[str, Any] | None) -> Settings:
        """Return a copy with the given fields replaced (tests and the demo use it)."""
        if not overrides:
            return self
        known = {f.name for f in fields(self)}
        unknown = set(overrides) - known
        if unknown:
            raise ConfigError(f"unknown settings: {', '.join(sorted(unknown))}")
        return replace(self, **overrides).validated()

    def validated(self) -> Settings:
        """Check cross-field sanity; return self."""
        database_url(self.database_url)
        if not Path(self.policy_dir).is_dir():
            raise ConfigError(f"GATEKEEPER_POLICY_DIR {self.policy_dir} is not a folder")
        if self.max_body_bytes < 1024:
            raise ConfigError("GATEKEEPER_MAX_BODY_BYTES must be at least 1024")
        if self.prometheus_fail_max < 1:
            raise ConfigError("GATEKEEPER_PROMETHEUS_FAIL_MAX must be at least 1")
        if self.prometheus_reset_timeout_s <= 0 or self.signin_window_s <= 0:
            raise ConfigError("GATEKEEPER_PROMETHEUS_RESET_TIMEOUT and GATEKEEPER_SIGNIN_WINDOW must be above zero")
        if self.retention_s < 86_400 or self.retention_batch < 1:
            raise ConfigError("GATEKEEPER_RETENTION must be at least 1d and GATEKEEPER_RETENTION_BATCH at least 1")
        if self.signin_max_failures < 1:
            raise ConfigError("GATEKEEPER_SIGNIN_MAX_FAILURES must be at least 1")
        return self


def _read_env(env: Mapping[str, str], values: dict[str, Any]) -> None:
    if url := env.get("GATEKEEPER_DATABASE_URL"):
        values["database_url"] = url
    if folder := env.get("GATEKEEPER_POLICY_DIR"):
        values["policy_dir"] = Path(folder)
    if reload := env.get("GATEKEEPER_POLICY_RELOAD"):
        values["policy_reload_s"] = parse_duration(reload)
    if key := env.get("GATEKEEPER_SECRET_KEY"):
        values["secret_key"] = key
    if prom := env.get("GATEKEEPER_PROMETHEUS_URL"):
        values["prometheus_url"] = prom.rstrip("/")
    if timeout := env.get("GATEKEEPER_PROMETHEUS_TIMEOUT"):
        values["prometheus_timeout_s"] = parse_duration(timeout)
    _read_ops_env(env, values)
    if hooks := env.get("GATEKEEPER_WEBHOOK_URLS"):
        values["webhook_urls"] = tuple(u.strip() for u in hooks.split(",") if u.strip())
    if size := env.get("GATEKEEPER_MAX_BODY_BYTES"):
        values["max_body_bytes"] = int(size)
    if horizon := env.get("GATEKEEPER_RETENTION"):
        values["retention_s"] = parse_duration(horizon)
    if batch := env.get("GATEKEEPER_RETENTION_BATCH"):
        values["retention_batch"] = _integer("GATEKEEPER_RETENTION_BATCH", batch)


def _read_ops_env(env: Mapping[str, str], values: dict[str, Any]) -> None:
    if fail_max := env.get("GATEKEEPER_PROMETHEUS_FAIL_MAX"):
        values["prometheus_fail_max"] = _integer("GATEKEEPER_PROMETHEUS_FAIL_MAX", fail_max)
    if reset := env.get("GATEKEEPER_PROMETHEUS_RESET_TIMEOUT"):
        values["prometheus_reset_timeout_s"] = parse_duration(reset)
    if failures := env.get("GATEKEEPER_SIGNIN_MAX_FAILURES"):
        values["signin_max_failures"] = _integer("GATEKEEPER_SIGNIN_MAX_FAILURES", failures)
    if window := env.get("GATEKEEPER_SIGNIN_WINDOW"):
        values["signin_window_s"] = parse_duration(window)


def _integer(name: str, text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"{name} must be a whole number, not {text!r}") from None
