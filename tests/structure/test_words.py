"""One word per concept (issue 13): the unit of work is `db`, a tier is a tier, each closed set is written once.

Read with `ast` from the source files, so nothing is imported or executed.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "gatekeeper"
VOCABULARY = PACKAGE / "core" / "vocabulary.py"
# Closed sets of names, each written once in core/vocabulary.py: a literal collection holding all of
# one of these anywhere else is a second copy.
SETS = {
    "stages": {"twin", "shadow", "canary", "expansion"},
    "rollout states": {"progressing", "held", "paused", "killed", "completed", "aborted"},
    "live states": {"progressing", "held", "paused"},
    "verdicts": {"allow", "shadow", "deny", "approval_required"},
    "tool classes": {"read_only", "reversible", "irreversible"},
    "approval states": {"pending", "approved", "rejected", "expired", "cancelled"},
}
OLD_WORDS = re.compile(r"position|rung", re.IGNORECASE)
FINE = re.compile(r"exposition|positional", re.IGNORECASE)


def _modules() -> Iterator[tuple[str, ast.Module]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        if "migrations" not in path.parts:
            yield str(path.relative_to(REPO)), ast.parse(path.read_text(), str(path))


def _imports_orm_session(tree: ast.Module) -> bool:
    return any(isinstance(node, ast.ImportFrom) and node.module in ("sqlmodel", "sqlalchemy.orm")
               and any(alias.name == "Session" for alias in node.names) for node in ast.walk(tree))


def _opened_as(node: ast.With) -> Iterator[str]:
    for item in node.items:
        call = item.context_expr
        if (isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute)
                and call.func.attr in ("transaction", "reading") and isinstance(item.optional_vars, ast.Name)):
            yield item.optional_vars.id


def test_the_unit_of_work_is_never_called_session() -> None:
    wrong = []
    for name, tree in _modules():
        orm = _imports_orm_session(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.arg) and node.arg == "session" and orm:
                wrong.append(f"{name}:{node.lineno} parameter session")
            if isinstance(node, ast.With):
                wrong += [f"{name}:{node.lineno} as {var}" for var in _opened_as(node) if var not in ("db", "tx")]
    assert not wrong, wrong


def _is_unit_of_work(arg: ast.arg) -> bool:
    return arg.arg == "db" and isinstance(arg.annotation, ast.Name) and arg.annotation.id == "Session"


def test_store_functions_take_db_keyword_only() -> None:
    wrong = []
    for path in sorted((PACKAGE / "store").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            positional = node.args.posonlyargs + node.args.args if isinstance(node, ast.FunctionDef) else []
            if any(_is_unit_of_work(a) for a in positional):
                wrong.append(f"{path.name}:{node.lineno} {node.name}")
    assert not wrong, wrong


def test_a_tier_is_never_called_a_position_or_a_rung() -> None:
    wrong = []
    for name, tree in _modules():
        for node in ast.walk(tree):
            found = (node.id if isinstance(node, ast.Name) else node.attr if isinstance(node, ast.Attribute)
                     else node.name if isinstance(node, ast.FunctionDef | ast.ClassDef)
                     else node.arg if isinstance(node, ast.arg) else "")
            if OLD_WORDS.search(found) and not FINE.search(found):
                wrong.append(f"{name}:{node.lineno} {found}")  # type: ignore[attr-defined]
    assert not wrong, wrong


def _literal_strings(node: ast.AST) -> set[str] | None:
    items = (node.elts if isinstance(node, ast.Tuple | ast.List | ast.Set)
             else node.slice.elts if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Tuple)
             else None)
    if items is None:
        return None
    return {e.value for e in items if isinstance(e, ast.Constant) and isinstance(e.value, str)}


def test_each_closed_set_of_names_is_written_once() -> None:
    copies = []
    for name, tree in _modules():
        if name == str(VOCABULARY.relative_to(REPO)):
            continue
        for node in ast.walk(tree):
            strings = _literal_strings(node)
            copies += [f"{name}:{node.lineno} {what}" for what, words in SETS.items()  # type: ignore[attr-defined]
                       if strings is not None and words <= strings]
    assert not copies, copies


def test_the_checks_find_what_they_look_for() -> None:
    tree = ast.parse("from sqlmodel import Session\n"
                     "Stage = Literal['twin', 'shadow', 'canary', 'expansion']\n"
                     "def f(session: Session, *, db: Session) -> None:\n"
                     "    with database.reading() as s:\n"
                     "        pass\n")
    stage, func = tree.body[1], tree.body[2]
    assert isinstance(stage, ast.Assign) and _literal_strings(stage.value) == SETS["stages"]
    assert isinstance(func, ast.FunctionDef) and _imports_orm_session(tree)
    assert [a.arg for a in func.args.args] == ["session"] and _is_unit_of_work(func.args.kwonlyargs[0])
    assert isinstance(func.body[0], ast.With) and list(_opened_as(func.body[0])) == ["s"]
    assert OLD_WORDS.search("position_label") and not FINE.search("position_label") and FINE.search("exposition")
