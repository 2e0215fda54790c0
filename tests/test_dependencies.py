"""Every third-party module gatekeeper/ imports comes from a distribution pyproject.toml declares."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

from tests.support.app import REPO


def normalised(name: str) -> str:
    """Return a distribution name in its PEP 503 form."""
    return re.sub(r"[-_.]+", "-", name).lower()


def declared() -> set[str]:
    """Return the distributions `[project].dependencies` requires (the server's own, not the extras)."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return {normalised(re.split(r"[\s<>=!~;\[]", requirement, maxsplit=1)[0])
            for requirement in project["dependencies"]}


def imported_modules(package: Path) -> dict[str, set[str]]:
    """Return each top-level third-party module imported anywhere under `package`, with the files importing it."""
    found: dict[str, set[str]] = {}
    for path in sorted(package.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top != package.name:
                    found.setdefault(top, set()).add(str(path.relative_to(package.parent)))
    return found


def test_every_imported_package_is_declared() -> None:
    modules = imported_modules(REPO / "gatekeeper")
    assert {"flask", "sqlmodel", "sqlalchemy", "alembic"} <= set(modules)  # the walk finds imports at all
    distributions = packages_distributions()
    wanted = declared()
    undeclared = {module: sorted(files) for module, files in modules.items()
                  if not {normalised(d) for d in distributions.get(module, [])} & wanted}
    assert undeclared == {}, f"imported but not in [project].dependencies: {undeclared}"


def test_the_walk_sees_a_missing_declaration(tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "sub" / "late.py").write_text("def f():\n    import yaml.constructor\n    from . import x\n")
    (package / "top.py").write_text("import os, json\nfrom pkg import top\nfrom requests.adapters import HTTPAdapter\n")
    assert imported_modules(package) == {"yaml": {"pkg/sub/late.py"}, "requests": {"pkg/top.py"}}
