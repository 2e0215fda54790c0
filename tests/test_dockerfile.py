"""No Docker engine runs here, so run the Dockerfile's own steps in a fresh virtual environment:
copy what it copies, run its RUN line with that venv's pip, then its CMD on a loopback port."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import time
import venv
from pathlib import Path

import requests

from tests.conftest import REPO
from tests.support.services import free_port


def instructions() -> list[tuple[str, str]]:
    """Return the Dockerfile's (INSTRUCTION, arguments), continuation lines joined."""
    text = (REPO / "Dockerfile").read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def environment(root: Path, bindir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GATEKEEPER_", "VIRTUAL_ENV", "PYTHON"))}
    for kind, args in instructions():
        if kind == "ENV":
            for pair in shlex.split(args):
                key, value = pair.split("=", 1)
                env[key] = value.replace("/app", str(root / "app")).replace("/data", str(root / "data"))
    env["PATH"] = f"{bindir}{os.pathsep}{env['PATH']}"
    return env


def test_the_dockerfile_steps_install_and_serve(tmp_path: Path) -> None:
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
        elif kind == "RUN":
            done = subprocess.run(args, shell=True, cwd=app_dir, env=env, capture_output=True, text=True,
                                  timeout=600, check=False)
            assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    gatekeeper = tmp_path / "venv" / "bin" / "gatekeeper"
    assert gatekeeper.exists()
    assert not str(subprocess.run([str(tmp_path / "venv" / "bin" / "python"), "-c",
                                   "import gatekeeper; print(gatekeeper.__file__)"], capture_output=True,
                                  text=True, env=env, cwd=tmp_path, check=True).stdout).startswith(str(REPO))

    port = free_port()
    command = " ".join(json.loads(dict(instructions())["CMD"])).replace("0.0.0.0:8000", f"127.0.0.1:{port}")
    server = subprocess.Popen(command, shell=True, cwd=app_dir, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, start_new_session=True)
    try:
        ready = wait_ready(f"http://127.0.0.1:{port}/readyz", server)
        assert ready.status_code == 200, ready.text
        assert ready.json()["checks"]["database"] == "ok"
        assert (data / "gatekeeper.db").exists()
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        output = server.communicate(timeout=30)[0]
    assert f"serving on http://127.0.0.1:{port}".encode() in output, output[-2000:]


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

