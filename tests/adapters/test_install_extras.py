"""Each adapter installs with its extra alone: a fresh virtual environment, offline, imports it without Flask."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.wheelhouse import build

ADAPTERS = {"openai-agents": "openai_agents", "pydantic-ai": "pydantic_ai", "langgraph": "langgraph"}
FRAMEWORKS = {"openai-agents": "agents", "pydantic-ai": "pydantic_ai", "langgraph": "langgraph"}  # import names
SERVER = {"flask", "gunicorn", "sqlmodel", "apscheduler", "gatekeeper"}


@pytest.mark.slow
@pytest.mark.parametrize("extra", sorted(ADAPTERS))
def test_a_fresh_venv_with_the_client_and_one_extra_imports_that_adapter(tmp_path: Path, extra: str) -> None:
    wheels = tmp_path / "wheels"
    build(wheels, extras=(extra,))
    for wheel in wheels.glob("*-py2-none-any.whl"):  # repacked under the first of the tags py2 and py3
        wheel.rename(wheel.with_name(wheel.name.replace("-py2-none-any", "-py2.py3-none-any")))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = str(venv / "bin" / "python")
    install = subprocess.run([python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                              "--no-index", "--find-links", str(wheels), f"gatekeeper-client[{extra}]"],
                             capture_output=True, text=True, timeout=600)
    assert install.returncode == 0, install.stderr[-3000:]
    listed = subprocess.run([python, "-m", "pip", "list", "--format=freeze", "--disable-pip-version-check"],
                            capture_output=True, text=True, timeout=60, check=True).stdout.lower()
    names = {line.split("==")[0] for line in listed.splitlines()}
    assert not names & SERVER, names & SERVER
    others = [module for name, module in FRAMEWORKS.items() if name != extra]  # the other extras stay out
    probe = (f"import gatekeeper_client.adapters.{ADAPTERS[extra]} as adapter, importlib.util as u; "
             "print(adapter.__file__); "
             f"print([m for m in ('flask', 'gatekeeper', *{others!r}) if u.find_spec(m)])")
    imported = subprocess.run([python, "-I", "-c", probe], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert imported.returncode == 0, imported.stderr[-3000:]
    location, present = imported.stdout.splitlines()
    assert location.startswith(str(venv)) and present == "[]"
