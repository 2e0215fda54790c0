"""The Dockerfile, setting by setting. No Docker engine runs here, so the image's own steps run in a
fresh virtual environment instead: copy what it copies, run its pip line with that venv's pip, then
serve with its CMD on a loopback port as its USER would (an unprivileged user), and probe it with
its HEALTHCHECK. Every instruction kind is listed in CHECKED, so a new setting needs a test here."""

from __future__ import annotations

import json
import os
import pwd
import re
import shlex
import shutil
import signal
import subprocess
import time
import tomllib
import venv
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.support.app import REPO
from tests.support.services import free_port

CHECKED = {"FROM", "ENV", "WORKDIR", "COPY", "RUN", "USER", "VOLUME", "EXPOSE", "HEALTHCHECK", "CMD"}


def instructions() -> list[tuple[str, str]]:
    """Return the Dockerfile's (INSTRUCTION, arguments), continuation lines joined."""
    text = (REPO / "Dockerfile").read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def only(kind: str) -> str:
    """Return the arguments of the one instruction of `kind`."""
    found = [args for k, args in instructions() if k == kind]
    assert len(found) == 1, (kind, found)
    return found[0]


def env_settings() -> dict[str, str]:
    pairs = [pair.split("=", 1) for kind, args in instructions() if kind == "ENV" for pair in shlex.split(args)]
    return dict(pairs)


def healthcheck() -> tuple[dict[str, str], list[str]]:
    """Return the HEALTHCHECK's options and its exec-form command."""
    options, command = only("HEALTHCHECK").split(" CMD ", 1)
    return dict(re.findall(r"--([a-z-]+)=(\S+)", options)), json.loads(command)


def environment(root: Path, bindir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GATEKEEPER_", "VIRTUAL_ENV", "PYTHON"))}
    for key, value in env_settings().items():
        env[key] = value.replace("/app", str(root / "app")).replace("/data", str(root / "data"))
    env["PATH"] = f"{bindir}{os.pathsep}{env['PATH']}"
    return env


def test_every_instruction_kind_is_checked_here() -> None:
    assert {kind for kind, _ in instructions()} == CHECKED


def test_the_base_image_is_the_python_the_package_requires() -> None:
    requires = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    assert only("FROM") == "python:3.11-slim" and requires == ">=3.11"


def test_settings_point_into_the_image_and_its_volume() -> None:
    settings = env_settings()
    assert settings == {"PYTHONDONTWRITEBYTECODE": "1", "PYTHONUNBUFFERED": "1",
                        "GATEKEEPER_POLICY_DIR": "/app/policies", "GATEKEEPER_DATABASE_URL": "sqlite:////data/gatekeeper.db"}
    assert only("WORKDIR") == "/app"
    copied = [args.split()[-1] for kind, args in instructions() if kind == "COPY"]
    assert copied == ["./", "./gatekeeper", "./policies"]  # the policy folder the setting names, under WORKDIR
    assert only("VOLUME") == "/data" and settings["GATEKEEPER_DATABASE_URL"].endswith("//data/gatekeeper.db")


def test_the_image_runs_as_an_unprivileged_user_who_owns_only_the_volume() -> None:
    kinds = [kind for kind, _ in instructions()]
    user, group = only("USER").split(":")
    assert user == group == "gatekeeper"
    creates = [args for kind, args in instructions() if kind == "RUN" and "useradd" in args]
    assert len(creates) == 1
    useradd = shlex.split(creates[0].split("&&")[0])
    assert useradd[0] == "useradd" and useradd[-1] == user and "--system" in useradd
    assert int(useradd[useradd.index("--uid") + 1]) >= 1000
    assert "chown gatekeeper:gatekeeper /data" in creates[0] and "/app" not in creates[0]
    # USER after every RUN (nothing runs as root after it); VOLUME after the chown, so a new volume is the user's.
    assert max(i for i, k in enumerate(kinds) if k == "RUN") < kinds.index("USER") < kinds.index("VOLUME")


def test_the_port_the_healthcheck_and_the_command_agree() -> None:
    command = json.loads(only("CMD"))
    assert command == ["gatekeeper", "serve", "--bind", "0.0.0.0:8000", "--workers", "4"]
    assert only("EXPOSE") == "8000"
    options, probe = healthcheck()
    assert options == {"interval": "10s", "timeout": "5s", "start-period": "30s", "retries": "3"}
    assert probe[:2] == ["python", "-c"] and "http://127.0.0.1:8000/readyz" in probe[2]
    assert "timeout=4" in probe[2]  # inside the HEALTHCHECK's own 5 s timeout


def run_as(user: str, data: Path) -> dict[str, Any]:
    """Return Popen options that run a process as `user` (when we are root), owning `data`."""
    if os.geteuid() != 0:
        return {}
    entry = pwd.getpwnam(user)
    shutil.chown(data, entry.pw_uid, entry.pw_gid)
    for parent in data.parents:  # the user must be able to walk down to the venv, the app and the volume
        mode = parent.stat().st_mode
        if not mode & 0o001:
            parent.chmod(mode | 0o001)
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}


@pytest.mark.slow
def test_the_dockerfile_steps_install_and_serve_unprivileged_and_healthy(tmp_path: Path) -> None:
    app_dir, data = tmp_path / "app", tmp_path / "data"
    app_dir.mkdir()
    data.mkdir()
    venv.EnvBuilder(with_pip=True).create(tmp_path / "venv")
    env = environment(tmp_path, tmp_path / "venv" / "bin")
    for kind, args in instructions():
        if kind == "COPY":
            *sources, _ = args.split()
            for source in sources:
                target = app_dir / source
                copy = shutil.copytree if (REPO / source).is_dir() else shutil.copy
                copy(REPO / source, target)  # type: ignore[operator]
        elif kind == "RUN" and args.startswith("pip install"):  # the user is made by run_as() below, not on this host
            done = subprocess.run(args, shell=True, cwd=app_dir, env=env, capture_output=True, text=True,
                                  timeout=600, check=False)
            assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    gatekeeper = tmp_path / "venv" / "bin" / "gatekeeper"
    assert gatekeeper.exists()
    assert not str(subprocess.run([str(tmp_path / "venv" / "bin" / "python"), "-c",
                                   "import gatekeeper; print(gatekeeper.__file__)"], capture_output=True,
                                  text=True, env=env, cwd=tmp_path, check=True).stdout).startswith(str(REPO))

    port = free_port()
    command = " ".join(json.loads(only("CMD"))).replace("0.0.0.0:8000", f"127.0.0.1:{port}")
    probe = [part.replace("127.0.0.1:8000", f"127.0.0.1:{port}") for part in healthcheck()[1]]
    server = subprocess.Popen(command, shell=True, cwd=app_dir, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, start_new_session=True, **run_as("nobody", data))
    try:
        ready = wait_ready(f"http://127.0.0.1:{port}/readyz", server)
        assert ready.status_code == 200, ready.text
        assert ready.json()["checks"]["database"] == "ok"
        assert (data / "gatekeeper.db").exists()
        assert subprocess.run(probe, env=env, cwd=app_dir, timeout=30, check=False).returncode == 0
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        output = server.communicate(timeout=30)[0]
    assert f"serving on http://127.0.0.1:{port}".encode() in output, output[-2000:]
    if os.geteuid() == 0:
        assert (data / "gatekeeper.db").stat().st_uid == pwd.getpwnam("nobody").pw_uid
    assert subprocess.run(probe, env=env, cwd=app_dir, timeout=30, check=False,
                          capture_output=True).returncode != 0  # unhealthy once the server is gone


def wait_ready(url: str, server: subprocess.Popen[bytes]) -> requests.Response:
    deadline = time.monotonic() + 60
    while True:
        try:
            # A worker's first request imports everything from source (no bytecode is written).
            return requests.get(url, timeout=10)
        except requests.RequestException:
            if server.poll() is not None:
                raise AssertionError(f"the server exited: {server.communicate()[0][-3000:]!r}") from None
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)
