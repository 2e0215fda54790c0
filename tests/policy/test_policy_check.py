"""`gatekeeper policy check` through click's CliRunner, on the shipped policies and broken copies."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from gatekeeper.cli.policy_commands import policy
from gatekeeper.policy_files import policy_revision
from tests.support.policy_texts import POLICIES


def test_valid_directory_prints_one_summary_line_per_file_and_exits_0() -> None:
    result = CliRunner().invoke(policy, ["check", str(POLICIES)])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    files = sorted(POLICIES.glob("*.y*ml"))
    assert len(lines) == len(files) >= 3
    support = POLICIES / "support-default.yaml"
    revision = policy_revision(support.read_text(encoding="utf-8"))
    assert (
        f"ok  {support}  support-default@{revision}  agents=support-bot  canary=1,5%  expansion=10,25,50,100%"
        in lines
    )
    assert all(line.startswith("ok  ") for line in lines)


def test_three_mistakes_are_all_listed_with_field_paths_and_exit_1(tmp_path: Path) -> None:
    text = (POLICIES / "support-default.yaml").read_text(encoding="utf-8")
    broken = (
        text.replace("tiers: [1, 5]", "tiers: [5, 1]")
        .replace("update_ticket: reversible", "update_ticket: reversable")
        .replace("expire_after: 15m", "expire_after: 15 minutes")
    )
    assert broken.count("\n") == text.count("\n") and broken != text
    path = tmp_path / "broken.yaml"
    path.write_text(broken, encoding="utf-8")
    result = CliRunner().invoke(policy, ["check", str(path)])
    assert result.exit_code == 1
    assert result.stdout.splitlines() == [
        f"{path}: tools.update_ticket: unknown tool class 'reversable' (did you mean 'reversible'?); "
        "expected one of: read_only, reversible, irreversible",
        f"{path}: stages.canary.tiers[1]: must be greater than the tier before it (5)",
        f"{path}: approvals.expire_after: must be a duration such as 30s, 10m or 24h, not '15 minutes'",
    ]


def test_valid_and_broken_files_together_exit_1_and_show_both(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text("name: bad\nagents: [\n", encoding="utf-8")
    result = CliRunner().invoke(policy, ["check", str(POLICIES / "billing.yaml"), str(tmp_path / "bad.yaml")])
    assert result.exit_code == 1
    ok_line, problem_line = result.stdout.splitlines()
    assert ok_line.startswith(f"ok  {POLICIES / 'billing.yaml'}  billing@")
    assert problem_line.startswith(f"{tmp_path / 'bad.yaml'}: invalid YAML at line 3")


def test_missing_path_exits_2(tmp_path: Path) -> None:
    result = CliRunner().invoke(policy, ["check", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 2
    assert "does not exist" in result.output


def test_no_paths_is_a_usage_error() -> None:
    assert CliRunner().invoke(policy, ["check"]).exit_code == 2
