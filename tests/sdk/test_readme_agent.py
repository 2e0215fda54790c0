"""The README's five-tool agent, run as written against the real app: under 20 lines of Gatekeeper glue."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from tests.support.runtime import POLICY, Runtime, counts, key_for

REPO = Path(__file__).resolve().parents[2]
BLOCK = re.compile(r"<!-- sdk-agent -->\n```python\n(?P<body>.*?)```", re.DOTALL)
GLUE = re.compile(r"gatekeeper_client|AsyncGatekeeper|current_session|\bgk\b")


def readme_agent() -> str:
    found = BLOCK.search((REPO / "README.md").read_text())
    assert found, "README.md lost its <!-- sdk-agent --> block"
    return found["body"]


def glue_lines(source: str) -> list[str]:
    """Return the lines about Gatekeeper: its import, every line of each @guarded(...), and each use of gk."""
    glue: list[str] = []
    open_parens = 0
    for line in source.splitlines():
        if line.startswith("@guarded(") or open_parens > 0:
            glue.append(line)
            open_parens += line.count("(") - line.count(")")
        elif GLUE.search(line):
            glue.append(line)
    return glue


@pytest.fixture
def policy_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "policies"
    folder.mkdir()
    (folder / "support.yaml").write_text(POLICY.replace("agents: [bot, other-bot]", "agents: [support-bot]"))
    return folder


def test_the_readme_agent_needs_under_20_lines_of_glue() -> None:
    source = readme_agent()
    ast.parse(source)
    glue = glue_lines(source)
    assert 5 < len(glue) < 20, glue
    assert sum(line.startswith("@guarded(") for line in glue) == 5


def test_the_readme_agent_runs_stable_and_its_candidate_mirror(runtime: Runtime, app: Flask, live_url: str,
                                                               tmp_path: Path, make_token: Any) -> None:
    runtime.name = "support-bot"
    runtime.agent = make_token("agent", agent="support-bot", name="support")
    runtime.setup("shadow", 0)  # the hot-path policy shadows 50% of live sessions
    (tmp_path / "agent.py").write_text(readme_agent())
    env = {**os.environ, "GATEKEEPER_URL": live_url, "AGENT_TOKEN": runtime.agent["Authorization"][7:],
           "PYTHONPATH": os.pathsep.join([str(REPO / "client"), os.environ.get("PYTHONPATH", "")])}
    key = key_for("support-bot", runtime.rollout_id, 50.0, inside=True)
    run = subprocess.run([sys.executable, "agent.py", key], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=60)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "version v1" in run.stdout and "version v2" in run.stdout and "sent" in run.stdout
    rows = lambda arm: counts(app, "SELECT group_concat(d.tool || ':' || d.verdict || ':' ||"  # noqa: E731
                                   " coalesce(d.outcome_status, '-'), ' ') FROM decisions d JOIN sessions s"
                                   " ON s.id = d.session_id WHERE s.arm = :arm", arm=arm)[0]
    assert rows("stable") == ("search_kb:allow:ok lookup_customer:allow:ok refund_payment:allow:ok "
                              "update_ticket:allow:ok send_email:allow:ok")
    assert rows("candidate") == ("search_kb:allow:ok lookup_customer:allow:ok refund_payment:shadow:- "
                                 "update_ticket:shadow:- send_email:shadow:-")
    assert counts(app, "SELECT count(*) FROM sessions WHERE status = 'ok'")[0] == 2
