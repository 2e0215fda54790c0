"""The gateway file: upstreams per agent and environment, secrets by environment reference only."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gatekeeper.errors import ConfigError
from gatekeeper.gateway.gateway_file import load_gateway_file

REPO = Path(__file__).resolve().parents[2]


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gateway.yaml"
    path.write_text(text)
    return path


def test_the_readme_example_reads_and_fills_its_references(tmp_path: Path) -> None:
    readme = (REPO / "README.md").read_text()
    example = re.search(r"```yaml\n(# gateway\.yaml.*?)```", readme, re.S)
    assert example is not None
    environ = {"TOOLS_TOKEN": "s3cret", "TWIN_API_KEY": "k"}
    found = load_gateway_file(_write(tmp_path, example.group(1)), environ=environ)
    bot = found.agents["support-bot"]
    assert found.timeout == 30.0
    assert bot.live.resolved_headers(environ) == {"Authorization": "Bearer s3cret"}
    assert bot.twin.resolved_env(environ) == {"API_KEY": "k"} and bot.twin.command == "python3"


@pytest.mark.parametrize(("text", "problem"), [
    ("agents: {bot: {live: {url: 'http://x/mcp', headers: {Authorization: 'Bearer abc'}}, twin: {command: t}}}",
     "literal secret"),
    ("agents: {bot: {live: {command: t, env: {API_KEY: abc}}, twin: {command: t}}}", "literal secret"),
    ("agents: {bot: {live: {url: 'http://x/mcp', command: t}, twin: {command: t}}}", "exactly one of command"),
    ("agents: {bot: {live: {command: t}}}", "agents.bot.twin"),
    ("agents: {bot: {live: {command: t}, twin: {command: t}, staging: {command: t}}}", "agents.bot.staging"),
    ("agents: {Bot!: {live: {command: t}, twin: {command: t}}}", "agents.Bot!"),
    ("agents: {bot: {live: {url: 'ftp://x'}, twin: {command: t}}}", "agents.bot.live.url"),
    ("agents: {bot: {live: {command: t, env: {A: {env: UNSET_VAR}}}, twin: {command: t}}}", "UNSET_VAR is not set"),
    ("agents: {bot: {live: {command: t}, twin: {command: t}}}\ntimeout: soon", "duration"),
    ("agents: [", "cannot be read"),
])
def test_a_bad_gateway_file_is_refused_with_its_field(tmp_path: Path, text: str, problem: str) -> None:
    with pytest.raises(ConfigError) as refused:
        load_gateway_file(_write(tmp_path, text), environ={})
    assert problem in refused.value.message and str(tmp_path) in refused.value.message


def test_the_tool_cost_is_the_policy_models() -> None:
    from gatekeeper.gateway.deciding import Decider
    from gatekeeper.policy_files import parse_policy
    from tests.support.gateway_world import POLICY

    costly = "refund_payment: {class: irreversible, cost: 0.02}"
    policy = parse_policy(POLICY.replace("refund_payment: irreversible", costly))
    assert (Decider.cost_micros(policy, "refund_payment"), Decider.cost_micros(policy, "search_kb")) == (20_000, 0)
    assert policy.tool_class("refund_payment") == "irreversible"
