"""compose.yaml: `docker compose config` validates it when Docker Compose is installed; without it, the
same ground is covered by parsing it and checking its structure and wiring (every service, its image
or build, environment references, volumes, healthcheck and dependencies, and that every file it mounts
exists), and the mounted Prometheus and Alertmanager configs are checked by promtool and amtool laid
out as the containers see them."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from tests.support.app import REPO
from tests.support.services import require_binary

COMPOSE = REPO / "compose.yaml"
SERVICES = {"postgres", "serve", "scheduler", "prometheus", "alertmanager", "grafana"}
TOP_LEVEL = {"name", "services", "volumes", "networks", "configs", "secrets"}
REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?([-?])([^}]*))?\}")
HEALTH_KEYS = {"test", "interval", "timeout", "retries", "start_period", "disable"}


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return loaded


def interpolate(value: str, env: dict[str, str] | None = None) -> str:
    """Fill ${VAR}, ${VAR:-default} and ${VAR-default} as Compose does."""
    env = env or {}

    def fill(match: re.Match[str]) -> str:
        name, kind, default = match.groups()
        return env.get(name) or (default if kind == "-" else "")

    return REFERENCE.sub(fill, value)


def service(name: str) -> dict[str, Any]:
    found: dict[str, Any] = compose()["services"][name]
    return found


def environment_of(name: str) -> dict[str, str]:
    raw = service(name).get("environment", {})
    pairs = raw.items() if isinstance(raw, dict) else (item.split("=", 1) for item in raw)
    return {key: interpolate(str(value)) for key, value in pairs}


def mounts(name: str) -> list[tuple[str, str, str]]:
    """Return a service's volumes as (source, target, mode)."""
    found = []
    for entry in service(name).get("volumes", []):
        source, target, *mode = entry.split(":")
        found.append((source, target, mode[0] if mode else "rw"))
    return found


def bind_mounts(name: str) -> dict[str, Path]:
    """Return a service's bind mounts: container path -> host path."""
    return {target: (REPO / source).resolve() for source, target, _ in mounts(name) if source.startswith(".")}


def _compose_command() -> list[str] | None:
    """Return Compose v2 (`docker compose`) if present, else v1 (`docker-compose`, Debian's package)."""
    docker = shutil.which("docker")
    if docker and not subprocess.run([docker, "compose", "version"], capture_output=True, check=False).returncode:
        return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    return [legacy] if legacy else None


def test_docker_compose_config_accepts_it() -> None:
    command = _compose_command()
    if command is None:
        message = "Docker Compose is not installed (.ci/setup installs Debian's docker-compose)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    done = subprocess.run([*command, "-f", str(COMPOSE), "config", "--quiet"], capture_output=True,
                          text=True, check=False, timeout=60)
    assert done.returncode == 0, done.stderr


def test_every_service_has_an_image_or_a_build_and_nothing_unknown() -> None:
    document = compose()
    assert {key for key in document if not key.startswith("x-")} <= TOP_LEVEL
    assert set(document["services"]) == SERVICES
    for name, spec in document["services"].items():
        assert spec.get("image") or spec.get("build"), name
        if "build" in spec:
            assert (REPO / spec["build"] / "Dockerfile").is_file()
        if "image" in spec and "build" not in spec:
            assert re.fullmatch(r"[a-z0-9./-]+:[A-Za-z0-9._-]+", spec["image"]) and not spec["image"].endswith(
                ":latest"), f"{name}: pin the image's version"
    assert service("serve")["image"] == service("scheduler")["image"] and service("serve")["build"] == "."


def test_environment_references_have_defaults_and_are_documented() -> None:
    text = COMPOSE.read_text()
    header = "".join(line for line in text.splitlines(keepends=True) if line.startswith("#"))
    for name, kind, _ in REFERENCE.findall(text):
        assert kind == "-", f"${{{name}}} needs a default, so the stack comes up without an .env file"
        assert name in header, f"{name} is not described at the top of compose.yaml"
    assert "$" not in REFERENCE.sub("", text.replace("$$", "")), "a $ that is not a ${VAR} reference"


def test_volumes_are_declared_and_every_mounted_file_exists() -> None:
    declared = set(compose().get("volumes") or {})
    used = set()
    for name in SERVICES:
        for source, target, mode in mounts(name):
            assert target.startswith("/") and mode in ("ro", "rw"), (name, target, mode)
            if source.startswith("."):
                assert (REPO / source).exists(), f"{name} mounts {source}, which is missing"
            else:
                used.add(source)
    assert used == declared


def test_healthchecks_and_startup_order() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    for name in SERVICES:
        spec = service(name)
        check = spec.get("healthcheck")
        if check is None:
            assert "build" in spec and "HEALTHCHECK" in dockerfile, f"{name} has no healthcheck"
            continue
        assert set(check) <= HEALTH_KEYS
        if check.get("disable"):
            assert name == "scheduler", f"only the scheduler, which serves no HTTP, may go without: {name}"
            continue
        assert check["test"][0] in ("CMD", "CMD-SHELL") and check["retries"] >= 3
    for name in SERVICES:
        for dependency, condition in (service(name).get("depends_on") or {}).items():
            assert dependency in SERVICES and condition == {"condition": "service_healthy"}, (name, dependency)
            assert not service(dependency).get("healthcheck", {}).get("disable"), dependency
    assert set(service("serve")["depends_on"]) == {"postgres"}  # serve upgrades the schema first ...
    assert set(service("scheduler")["depends_on"]) == {"serve"}  # ... then the scheduler starts


def test_servers_and_scheduler_share_postgres_prometheus_and_their_policies() -> None:
    postgres = environment_of("postgres")
    for name in ("serve", "scheduler"):
        env = environment_of(name)
        url = urlsplit(env["GATEKEEPER_DATABASE_URL"])
        assert url.scheme.startswith("postgresql") and url.hostname == "postgres" and url.port == 5432
        assert (url.username, url.password, url.path) == (postgres["POSTGRES_USER"], postgres["POSTGRES_PASSWORD"],
                                                           f"/{postgres['POSTGRES_DB']}")
        assert env["GATEKEEPER_PROMETHEUS_URL"] == "http://prometheus:9090"
        assert bind_mounts(name)[env["GATEKEEPER_POLICY_DIR"]] == (REPO / "policies").resolve()
    assert service("serve")["command"][:2] == ["gatekeeper", "serve"]
    assert service("scheduler")["command"] == ["gatekeeper", "scheduler"]


def container_view(name: str, root: Path) -> Path:
    """Copy a service's bind-mounted files into `root` at their container paths; return root."""
    for target, source in bind_mounts(name).items():
        destination = root / target.lstrip("/")
        destination.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if source.is_dir() else shutil.copy)(source, destination)  # type: ignore[operator]
    return root


def test_prometheus_scrapes_the_servers_and_alerts_through_alertmanager(tmp_path: Path) -> None:
    command = service("prometheus")["command"]
    config_path = next(arg.split("=", 1)[1] for arg in command if arg.startswith("--config.file="))
    view = container_view("prometheus", tmp_path)
    config = yaml.safe_load((view / config_path.lstrip("/")).read_text())
    assert config["scrape_configs"][0]["static_configs"][0]["targets"] == ["serve:8000"]
    assert config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == ["alertmanager:9093"]
    promtool = require_binary("promtool")
    done = subprocess.run([promtool, "check", "config", str(view / config_path.lstrip("/"))], capture_output=True,
                          text=True, check=False, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 1 rule files found" in done.stdout + done.stderr  # the shipped rules, loaded in place


def test_alertmanager_posts_to_the_servers_with_a_mounted_token(tmp_path: Path) -> None:
    command = service("alertmanager")["command"]
    config_path = next(arg.split("=", 1)[1] for arg in command if arg.startswith("--config.file="))
    view = container_view("alertmanager", tmp_path)
    config = yaml.safe_load((view / config_path.lstrip("/")).read_text())
    hook = next(r for r in config["receivers"] if r["name"] == "gatekeeper")["webhook_configs"][0]
    assert hook["url"] == "http://serve:8000/v1/alerts"
    token_file = Path(hook["http_config"]["authorization"]["credentials_file"])
    assert str(token_file.parent) in bind_mounts("alertmanager")  # the secrets folder is mounted there
    amtool = require_binary("amtool")
    done = subprocess.run([amtool, "check-config", str(view / config_path.lstrip("/"))], capture_output=True,
                          text=True, check=False, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_grafana_is_provisioned_with_prometheus_and_the_shipped_dashboard(tmp_path: Path) -> None:
    view = container_view("grafana", tmp_path)
    provisioning = view / "etc/grafana/provisioning"
    datasources = yaml.safe_load((provisioning / "datasources/prometheus.yml").read_text())["datasources"]
    assert [(d["type"], d["url"], d["isDefault"]) for d in datasources] == [("prometheus", "http://prometheus:9090",
                                                                              True)]
    providers = yaml.safe_load((provisioning / "dashboards/gatekeeper.yml").read_text())["providers"]
    folder = view / providers[0]["options"]["path"].lstrip("/")
    assert [p.name for p in folder.iterdir()] == ["gatekeeper-grafana.json"]
    assert (folder / "gatekeeper-grafana.json").read_text() == (REPO / "dashboards/gatekeeper-grafana.json").read_text()
