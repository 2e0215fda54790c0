"""The client installs alone: a fresh virtual environment, offline, gets the SDK and not the server."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.wheelhouse import build


@pytest.mark.slow
def test_a_fresh_venv_with_only_the_client_imports_it_without_flask(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    build(wheels)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = str(venv / "bin" / "python")
    install = subprocess.run([python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                              "--no-index", "--find-links", str(wheels), "gatekeeper-client"],
                             capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr[-3000:]
    listed = subprocess.run([python, "-m", "pip", "list", "--format=freeze", "--disable-pip-version-check"],
                            capture_output=True, text=True, timeout=60, check=True).stdout.lower()
    names = {line.split("==")[0] for line in listed.splitlines()}
    assert "gatekeeper-client" in names and "httpx" in names
    assert not names & {"flask", "gunicorn", "sqlmodel", "apscheduler", "sqlalchemy", "gatekeeper", "requests"}
    probe = ("import gatekeeper_client, importlib.util as u; "
             "print(gatekeeper_client.__file__); "
             "print([m for m in ('flask', 'gatekeeper', 'sqlmodel') if u.find_spec(m)])")
    imported = subprocess.run([python, "-I", "-c", probe], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert imported.returncode == 0, imported.stderr
    location, missing = imported.stdout.splitlines()
    assert location.startswith(str(venv)) and missing == "[]"
