"""The README's "Your first agent" commands, run in order by bash against a real server and scheduler.

Every fenced block after a `<!-- first-agent -->` marker is a shell block joined into one script;
`<!-- first-agent: FILE -->` marks a file to save first (the SDK wiring, `agent.py`). The script
runs in an empty folder with no GATEKEEPER_* variables, as a newcomer's shell would, with
`gatekeeper` and `python3` meaning this checkout. Its port 8000 becomes a free one.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.app import REPO
from tests.support.services import free_port

MARKED = re.compile(r"<!-- first-agent(?:: (?P<file>\S+))? -->\n```(?P<lang>\w+)\n(?P<body>.*?)```", re.DOTALL)


def first_agent_blocks() -> list[tuple[str | None, str, str]]:
    """Return the README's marked blocks as (file to save or None, language, text), in order."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    return [(m["file"], m["lang"], m["body"]) for m in MARKED.finditer(text)]


def newcomer_env(tmp_path: Path) -> dict[str, str]:
    """A shell environment with no Gatekeeper settings, whose `gatekeeper` and `python3` are this checkout's."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "gatekeeper").write_text(f'#!/bin/sh\nexec "{sys.executable}" -m gatekeeper.cli "$@"\n')
    (bindir / "gatekeeper").chmod(0o755)
    (bindir / "python3").symlink_to(sys.executable)
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEKEEPER_") and k != "PROMETHEUS_MULTIPROC_DIR"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env["PATH"] = f"{bindir}{os.pathsep}{env['PATH']}"
    return env


def gatekeeper(env: dict[str, str], cwd: Path, *args: str) -> str:
    """Run the CLI as the newcomer's shell would; return its output."""
    done = subprocess.run(["gatekeeper", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def stop_group(pgid: int) -> None:
    """Stop what the script left running in the background (its server and scheduler)."""
    for signum, wait_s in ((signal.SIGTERM, 20.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pgid, signum)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.2)


def test_the_readme_blocks_are_marked_as_expected() -> None:
    blocks = first_agent_blocks()
    kinds = [(file, lang) for file, lang, _ in blocks]
    assert kinds == [(None, "sh")] * 5 + [("agent.py", "python")] + [(None, "sh")] * 3
    commands = " ".join(body for _, lang, body in blocks if lang == "sh")
    for command in ("policy check", "db upgrade", "user create", "token create --role release_manager", "serve",
                    "scheduler", "agent register", "agent set-stable", "rollout start", "token create --role agent",
                    "token list", "status", "history", "approvals", "approve"):
        assert f"gatekeeper {command}" in commands, command
    assert "mirror_session()" in blocks[5][2]


@pytest.mark.slow
def test_your_first_agent_runs_as_written(tmp_path: Path) -> None:
    port = free_port()
    script = ["set -euo pipefail"]
    for file, lang, body in first_agent_blocks():
        body = body.replace("127.0.0.1:8000", f"127.0.0.1:{port}")
        if file is not None:
            (tmp_path / file).write_text(body)
        else:
            assert lang == "sh"
            script.append(body)
    script.append('printf "GATEKEEPER_TOKEN=%s\\nAGENT_TOKEN=%s\\n" "$GATEKEEPER_TOKEN" "$AGENT_TOKEN"')
    (tmp_path / "first-agent.sh").write_text("\n".join(script))
    env = newcomer_env(tmp_path)
    shell = subprocess.Popen(["bash", "first-agent.sh"], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        output = shell.communicate(timeout=240)[0]
        logs = "".join((tmp_path / name).read_text()[-2000:] for name in ("serve.log", "scheduler.log")
                       if (tmp_path / name).exists())
        assert shell.returncode == 0, output[-4000:] + logs
        assert "ok  policies/first.yaml  first@" in output
        assert "created release_manager ana" in output
        assert "registered my-agent: policy first@" in output
        assert "my-agent: stable - -> v1 by release_manager:ana: what runs in production today" in output
        assert "my-agent: start -> twin (progressing) by release_manager:ana" in output
        assert re.search(r"^\d+\s+my-agent-runtime\s+agent\s+my-agent\s", output, re.MULTILINE), output
        # The candidate's irreversible call waited for a person in canary, who approved it; then it ran.
        waited = re.search(r"^send_reply waits for a person: approval (\w+)$", output, re.MULTILINE)
        assert waited is not None, output[-4000:]
        assert "1 pending approval(s)" in output
        assert f"{waited[1]}: approved by release_manager:ana: my-agent send_reply (irreversible, $0.01)" in output
        assert "send_reply: allow" in output

        tokens = dict(re.findall(r"^(GATEKEEPER_TOKEN|AGENT_TOKEN)=(\S+)$", output, re.MULTILINE))
        env.update(tokens, GATEKEEPER_URL=f"http://127.0.0.1:{port}")
        final = json.loads(gatekeeper(env, tmp_path, "status", "my-agent", "--json"))
        assert (final["stable_version"], final["rollout"]["state"]) == ("v2", "completed"), final
        history = json.loads(gatekeeper(env, tmp_path, "history", "my-agent", "--kind", "transition", "--json"))
        promoted = [e["to"]["stage"] for e in reversed(history["items"]) if e["action"] == "promote"]
        assert promoted == ["shadow", "canary", "expansion", "expansion"]
        with sqlite3.connect(tmp_path / "gatekeeper.db") as db:  # agent.py ran the candidate in the mirrors
            mirrored = db.execute("SELECT count(*) FROM sessions WHERE mirror_of IS NOT NULL").fetchone()[0]
        assert mirrored >= 4
    finally:
        if shell.poll() is None:
            shell.kill()
            shell.communicate(timeout=10)
        stop_group(shell.pid)
