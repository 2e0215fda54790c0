"""The SDK's core imports only the standard library and httpx, the one dependency it declares."""

from __future__ import annotations

import ast
import sys
import tomllib
from pathlib import Path

CLIENT = Path(__file__).resolve().parents[2] / "client"


def test_the_sdk_core_imports_only_what_it_declares() -> None:
    imported: set[str] = set()
    for path in (CLIENT / "gatekeeper_client").glob("*.py"):  # the adapters, behind extras, are their own
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imported.add(node.module.split(".")[0])
    third_party = imported - set(sys.stdlib_module_names) - {"gatekeeper_client"}
    assert third_party == {"httpx"}
    project = tomllib.loads((CLIENT / "pyproject.toml").read_text())["project"]
    assert [d.split(">")[0] for d in project["dependencies"]] == ["httpx"]
    assert {"openai-agents", "pydantic-ai", "langgraph"} <= set(project["optional-dependencies"])
