"""The house's shape: no import circle, one name per room, small modules, tests apart from each other.

Read with `ast` from the source files, so nothing is imported or executed.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "gatekeeper"
TESTS = REPO / "tests"
MAX_LINES = 400
# Exceptions to the two rules below; house-policy's pydantic policy model emptied both. Nothing may join them.
OVERSIZE: frozenset[str] = frozenset()
CIRCLED: frozenset[str] = frozenset()
ROOMS = ("core", "store", "")  # the pure core, persistence, and the use cases at the package's top level


def _modules(root: Path) -> Iterator[Path]:
    for path in sorted(root.rglob("*.py")):
        if "migrations" not in path.relative_to(root).parts:
            yield path


def _name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported(path: Path, known: set[str]) -> set[str]:
    """Return the gatekeeper modules `path` imports, at module level or inside functions."""
    found: set[str] = set()
    package = _name(path) if path.name == "__init__.py" else _name(path).rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            found.update(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names)
    return {name for name in found if name in known}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """Return one import circle as a path of modules, or None (depth-first search, colours)."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)):
            return found
    return None


def test_no_import_circle_inside_the_package() -> None:
    paths = list(_modules(PACKAGE))
    known = {_name(path) for path in paths}
    graph = {_name(path): _imported(path, known) - {_name(path)} - (CIRCLED if _name(path) in CIRCLED else set())
             for path in paths}
    assert _cycle(graph) is None, " -> ".join(_cycle(graph) or [])


def test_the_circle_finder_finds_a_circle() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_core_store_and_use_cases_share_no_module_name() -> None:
    seen: dict[str, str] = {}
    clashes = []
    for room in ROOMS:
        folder = PACKAGE / room if room else PACKAGE
        for path in sorted(folder.glob("*.py")):
            if path.stem in ("__init__", "__main__"):
                continue
            key = path.stem.removesuffix("s")  # rollout and rollouts are one name
            where = f"{room or 'gatekeeper'}/{path.name}"
            if key in seen:
                clashes.append(f"{seen[key]} and {where}")
            seen[key] = where
    assert not clashes, clashes


def test_every_module_is_under_the_size_limit() -> None:
    big = {str(path.relative_to(REPO)): len(path.read_text().splitlines()) for path in _modules(PACKAGE)}
    over = {name: lines for name, lines in big.items() if lines > MAX_LINES and name not in OVERSIZE}
    assert not over, over
    assert all(name in big for name in OVERSIZE), "an exception names a module that is gone: drop it"


def test_no_test_module_imports_another_test_module_or_a_conftest() -> None:
    wrong = []
    for path in _modules(TESTS):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            wrong += [f"{path.relative_to(REPO)}: {name}" for name in names
                      if name.startswith("tests.") and not name.startswith("tests.support")]
    assert not wrong, wrong
