"""Real Postgres, Prometheus and Alertmanager servers for tests.

Each server runs its real binary on a free 127.0.0.1 port inside a temp dir and is
stopped (terminate, wait with a timeout, kill) on exit. Use one as a context manager or
through ``start()``/``stop()`` inside your own fixture::

    @pytest.fixture
    def prometheus(tmp_path):
        with PrometheusServer(tmp_path, scrape_targets=["127.0.0.1:8000"]) as server:
            yield server

A missing binary fails the test when ``CI=true`` and skips it loudly otherwise.
``LoopbackHTTPServer`` is the other end: a tiny in-thread HTTP server that records
requests, for fake exporters and webhook receivers.

Errors::

    RuntimeError
    └── ServerStartError     the binary exited or was not ready in time (log tail attached)
        └── PortInUseError   another process took the port first; retried on a new port
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any, NoReturn, Self
from urllib.parse import urlsplit

import pytest
import requests
import sqlalchemy
import yaml
from sqlalchemy.pool import NullPool

START_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0
PORT_ATTEMPTS = 3

# Binary -> Debian package, where the names differ.
_DEBIAN_PACKAGES = {"promtool": "prometheus", "alertmanager": "prometheus-alertmanager",
                    "amtool": "prometheus-alertmanager", "runuser": "util-linux"}
_POSTGRES_TOOLS = {"postgres", "initdb", "pg_ctl", "pg_isready", "psql", "createdb"}
_ALIASES = {"prometheus-alertmanager": ("alertmanager",), "alertmanager": ("prometheus-alertmanager",)}


class ServerStartError(RuntimeError):
    """The server binary exited early or did not become ready in time."""


class PortInUseError(ServerStartError):
    """Another process bound the port between ``free_port()`` and the server's bind."""


def find_binary(name: str) -> str | None:
    """Return the path of binary ``name`` (or a known alias), or None."""
    for candidate in (name, *_ALIASES.get(name, ())):
        if path := shutil.which(candidate):
            return path
    if name in _POSTGRES_TOOLS:  # Debian keeps the server tools off PATH, in a versioned dir
        found = glob.glob(f"/usr/lib/postgresql/*/bin/{name}")
        found.sort(key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
        return found[-1] if found else None
    return None


def require_binary(name: str) -> str:
    """Return the path of binary ``name``; fail the test under CI=true, else skip it loudly."""
    path = find_binary(name)
    if path is None:
        package = "postgresql" if name in _POSTGRES_TOOLS else _DEBIAN_PACKAGES.get(name, name)
        missing(f"binary {name!r} not found: install Debian package {package!r} (apt-get install {package})")
    return path


def missing(what: str) -> NoReturn:
    """Fail the current test when CI=true, else skip it with a loud reason."""
    reason = f"!!! MISSING TEST DEPENDENCY !!! {what}"
    if os.environ.get("CI") == "true":
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


def free_port() -> int:
    """Return a TCP port that is free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http_ok(url: str) -> bool:
    """Return True when ``url`` answers a GET with status 200."""
    try:
        return requests.get(url, timeout=1).status_code == 200
    except requests.RequestException:  # refused, reset and timed out all mean "not ready"
        return False


class _Managed(ABC):
    """``with`` support for anything with ``start() -> Self`` and ``stop()``."""

    @abstractmethod
    def start(self) -> Self: ...

    @abstractmethod
    def stop(self) -> None: ...

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, trace: object) -> None:
        self.stop()


class _Server(_Managed):
    """A real binary on a fixed 127.0.0.1 port, logging to ``<dir>/<name>.log``.

    The port and the working dir are chosen on the first ``start()`` and kept, so
    ``stop()`` then ``start()`` brings the same server back on the same port and data.
    """

    name = "server"
    stop_signal = signal.SIGTERM

    def __init__(self, tmp_dir: str | os.PathLike[str]) -> None:
        self.tmp_dir = Path(tmp_dir)
        self.port: int | None = None
        self._dir: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        """Base URL of the running server."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def dir(self) -> Path:
        """This server's own working dir inside ``tmp_dir``."""
        if self._dir is None:
            self._dir = Path(tempfile.mkdtemp(prefix=f"{self.name}-", dir=self.tmp_dir))
        return self._dir

    @property
    def log_path(self) -> Path:
        """The file collecting the binary's stdout and stderr."""
        return self.dir / f"{self.name}.log"

    @property
    def running(self) -> bool:
        """Whether the process is alive."""
        return self._process is not None and self._process.poll() is None

    def start(self) -> Self:
        """Start the binary and wait until it is ready; a fresh port is retried if taken."""
        if self._process is not None:
            return self
        fresh = self.port is None
        for attempt in range(1, PORT_ATTEMPTS + 1):
            if fresh:
                self.port = free_port()
            try:
                self._launch()
                return self
            except PortInUseError:
                if not fresh or attempt == PORT_ATTEMPTS:
                    raise
        return self

    def stop(self) -> None:
        """Stop the binary: signal, wait with a timeout, then kill."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.send_signal(self.stop_signal)
            try:
                process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=STOP_TIMEOUT)
        if self._log is not None:
            self._log.close()
            self._log = None

    def _launch(self) -> None:
        self._prepare()
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        offset = self._log.tell()
        self._process = subprocess.Popen(
            self._command(), stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
            cwd=self.dir, **self._popen_options(),
        )
        try:
            self._wait_ready(offset)
            self._after_ready()
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, offset: int) -> None:
        assert self._process is not None
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                self._raise_start_error(f"exited with code {self._process.returncode}", offset)
            if self._is_ready():
                return
            time.sleep(0.1)
        self._raise_start_error(f"not ready within {START_TIMEOUT:.0f} s", offset)

    def _raise_start_error(self, what: str, offset: int) -> None:
        with open(self.log_path, "rb") as log:
            log.seek(offset)
            tail = log.read().decode(errors="replace").splitlines()[-30:]
        message = f"{self.name} on 127.0.0.1:{self.port} {what}; {self.log_path} ends:\n" + "\n".join(tail)
        in_use = any("address already in use" in line.lower() for line in tail)
        raise (PortInUseError if in_use else ServerStartError)(message)

    def config(self) -> dict[str, Any]:
        """Return the contents of ``<name>.yml``, written before each launch."""
        return {}

    def _prepare(self) -> None:
        (self.dir / "data").mkdir(exist_ok=True)
        (self.dir / f"{self.name}.yml").write_text(yaml.safe_dump(self.config(), sort_keys=False))

    def _after_ready(self) -> None:
        """Finish setting up once the server answers."""

    def _popen_options(self) -> dict[str, Any]:
        return {}

    @abstractmethod
    def _command(self) -> list[str]: ...

    @abstractmethod
    def _is_ready(self) -> bool: ...


class PostgresServer(_Server):
    """A throwaway Postgres cluster with trust auth on 127.0.0.1 and a ``gatekeeper`` database.

    initdb refuses to run as root, so under euid 0 the cluster belongs to the Debian
    ``postgres`` system user and its data dir is chowned to it.
    """

    name = "postgres"
    database = "gatekeeper"
    stop_signal = signal.SIGINT  # "fast" shutdown; SIGTERM would wait for every client to leave

    def __init__(self, tmp_dir: str | os.PathLike[str]) -> None:
        super().__init__(tmp_dir)
        self._as_root = os.geteuid() == 0
        self._databases = 0

    @property
    def url(self) -> str:
        """SQLAlchemy URL of the ``gatekeeper`` database."""
        return self._url(self.database)

    def _url(self, database: str) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def _prepare(self) -> None:
        data = self.dir / "data"
        if (data / "PG_VERSION").exists():
            return
        for path in (data, self.dir / "socket"):
            path.mkdir(mode=0o700, exist_ok=True)
            self._give_to_postgres(path)
        self._run_as_postgres(
            [require_binary("initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
             "--encoding=UTF8", "--locale=C", "--no-sync"]
        )
        # Only loopback TCP and our own socket dir may connect, both without a password.
        (data / "pg_hba.conf").write_text("local all all trust\nhost all all 127.0.0.1/32 trust\n")

    def _give_to_postgres(self, path: Path) -> None:
        if not self._as_root:
            return
        shutil.chown(path, "postgres", "postgres")
        for parent in path.parents:  # the postgres user must be able to walk down to the data dir
            mode = parent.stat().st_mode
            if not mode & 0o001:
                parent.chmod(mode | 0o001)

    def _run_as_postgres(self, command: list[str]) -> None:
        if self._as_root:
            command = [require_binary("runuser"), "-u", "postgres", "--", *command]
        done = subprocess.run(command, cwd=self.dir, capture_output=True, timeout=60, check=False)
        if done.returncode != 0:
            output = (done.stdout + done.stderr).decode(errors="replace")
            raise ServerStartError(f"{command} failed with code {done.returncode}:\n{output[-3000:]}")

    def _popen_options(self) -> dict[str, Any]:
        # Popen switches user itself: a runuser wrapper would SIGKILL postgres 2 s after our signal.
        return {"user": "postgres", "group": "postgres", "extra_groups": []} if self._as_root else {}

    def _command(self) -> list[str]:
        settings = {
            "port": str(self.port), "listen_addresses": "127.0.0.1",
            "unix_socket_directories": str(self.dir / "socket"), "max_connections": "200",
            # Throwaway data: durability only costs time here.
            "fsync": "off", "synchronous_commit": "off", "full_page_writes": "off",
        }
        options = [arg for key, value in settings.items() for arg in ("-c", f"{key}={value}")]
        return [require_binary("postgres"), "-D", str(self.dir / "data"), *options]

    def create_database(self, prefix: str = "test") -> str:
        """Create an empty database named after `prefix` (one per test keeps tests apart); return its URL."""
        self._databases += 1
        name = f"{prefix}_{self._databases}"
        engine = self._admin_engine(isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as connection:
                connection.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
        finally:
            engine.dispose()
        return self._url(name)

    def _admin_engine(self, **options: Any) -> sqlalchemy.Engine:
        return sqlalchemy.create_engine(self._url("postgres"), poolclass=NullPool, **options)

    def _is_ready(self) -> bool:
        engine = self._admin_engine(connect_args={"connect_timeout": 1})
        try:
            with engine.connect() as connection:
                return connection.execute(sqlalchemy.text("select 1")).scalar() == 1
        except sqlalchemy.exc.OperationalError:
            return False
        finally:
            engine.dispose()

    def _after_ready(self) -> None:
        engine = self._admin_engine(isolation_level="AUTOCOMMIT")
        exists = sqlalchemy.text("select 1 from pg_database where datname = :name")
        try:
            with engine.connect() as connection:
                if not connection.execute(exists, {"name": self.database}).scalar():
                    connection.execute(sqlalchemy.text(f'create database "{self.database}"'))
        finally:
            engine.dispose()


class PrometheusServer(_Server):
    """Prometheus scraping ``scrape_targets`` (``"127.0.0.1:PORT"``) at ``/metrics``.

    Prometheus applies new scrape targets every 5 s, so the first scrape lands ~5 s after start.
    """

    name = "prometheus"

    def __init__(
        self,
        tmp_dir: str | os.PathLike[str],
        *,
        scrape_targets: Sequence[str],
        scrape_interval: str = "1s",
        rule_files: Sequence[str | os.PathLike[str]] = (),
        alertmanager_url: str | None = None,
        evaluation_interval: str = "1s",
    ) -> None:
        super().__init__(tmp_dir)
        self.scrape_targets = list(scrape_targets)
        self.scrape_interval = scrape_interval
        self.rule_files = [str(Path(path).resolve()) for path in rule_files]
        self.alertmanager_url = alertmanager_url
        self.evaluation_interval = evaluation_interval

    def query(self, expr: str, *, at: float | None = None) -> list[dict[str, Any]]:
        """Run an instant PromQL query and return its result list; raise on an error status."""
        params = {"query": expr} if at is None else {"query": expr, "time": f"{at:.3f}"}
        answer = requests.get(f"{self.url}/api/v1/query", params=params, timeout=10).json()
        if answer.get("status") != "success":
            raise RuntimeError(f"query {expr!r} failed: {answer}")
        return list(answer["data"]["result"])

    def config(self) -> dict[str, Any]:
        """Return the prometheus.yml contents this server runs with."""
        config: dict[str, Any] = {
            "global": {"scrape_interval": self.scrape_interval, "scrape_timeout": self.scrape_interval,
                       "evaluation_interval": self.evaluation_interval},
            "rule_files": self.rule_files,
            "scrape_configs": [{"job_name": "gatekeeper", "metrics_path": "/metrics",
                                "static_configs": [{"targets": self.scrape_targets}]}],
        }
        if self.alertmanager_url:
            parts = urlsplit(self.alertmanager_url)
            config["alerting"] = {"alertmanagers": [{
                "scheme": parts.scheme or "http", "path_prefix": parts.path or "/",
                "static_configs": [{"targets": [parts.netloc]}],
            }]}
        return config

    def _command(self) -> list[str]:
        return [
            require_binary("prometheus"), f"--config.file={self.dir / 'prometheus.yml'}",
            f"--storage.tsdb.path={self.dir / 'data'}", f"--web.listen-address=127.0.0.1:{self.port}",
            "--web.enable-lifecycle",
        ]

    def _is_ready(self) -> bool:
        return http_ok(f"{self.url}/-/ready")


class AlertmanagerServer(_Server):
    """A single Alertmanager (clustering off) sending every alert to ``webhook_url``."""

    name = "alertmanager"

    def __init__(
        self,
        tmp_dir: str | os.PathLike[str],
        *,
        webhook_url: str,
        bearer_token: str | None = None,
        group_wait: str = "1s",
        group_interval: str = "1s",
        repeat_interval: str = "2s",
        group_by: Sequence[str] = ("alertname", "agent"),
    ) -> None:
        super().__init__(tmp_dir)
        self.webhook_url = webhook_url
        self.bearer_token = bearer_token
        self.timing = {"group_wait": group_wait, "group_interval": group_interval,
                       "repeat_interval": repeat_interval}
        self.group_by = list(group_by)

    def post_alerts(self, alerts: list[dict[str, Any]]) -> None:
        """Post alerts (``{"labels": ..., "annotations": ...}``) to the API v2, as Prometheus does."""
        requests.post(f"{self.url}/api/v2/alerts", json=alerts, timeout=10).raise_for_status()

    def config(self) -> dict[str, Any]:
        """Return the alertmanager.yml contents this server runs with."""
        webhook: dict[str, Any] = {"url": self.webhook_url, "send_resolved": True}
        if self.bearer_token is not None:
            webhook["http_config"] = {"authorization": {"type": "Bearer", "credentials": self.bearer_token}}
        return {
            "route": {"receiver": "webhook", "group_by": self.group_by, **self.timing},
            "receivers": [{"name": "webhook", "webhook_configs": [webhook]}],
        }

    def _command(self) -> list[str]:
        return [
            require_binary("prometheus-alertmanager"), f"--config.file={self.dir / 'alertmanager.yml'}",
            f"--storage.path={self.dir / 'data'}", f"--web.listen-address=127.0.0.1:{self.port}",
            "--cluster.listen-address=",
        ]

    def _is_ready(self) -> bool:
        return http_ok(f"{self.url}/-/ready")


