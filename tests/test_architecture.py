"""The one-way import rule of docs/architecture.md: the library never imports the applications built on it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIRST_PARTY = {"deltalm", "data_prep", "pretrain", "finetune", "demo", "tests", "benchmarks"}
ALLOWED = {
    "deltalm": {"deltalm"},
    "data_prep": {"deltalm", "data_prep"},
    "pretrain": {"deltalm", "pretrain"},
    "finetune": {"deltalm", "pretrain", "finetune"},
    "demo": {"deltalm", "data_prep", "pretrain", "finetune", "demo"},
    "benchmarks": {"deltalm", "data_prep", "pretrain", "finetune", "demo", "benchmarks"},
}


def imported_packages(path: Path) -> set[tuple[str, int]]:
    """First-party top-level packages ``path`` imports (module level and inside functions), with line numbers."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        for name in names:
            top = name.split(".")[0]
            if top in FIRST_PARTY:
                found.add((top, node.lineno))
    return found


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_imports_follow_the_one_way_rule(package: str):
    broken = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for top, line in sorted(imported_packages(path)):
            if top not in ALLOWED[package]:
                broken.append(f"{path.relative_to(ROOT)}:{line} imports {top}")
    assert not broken, "\n".join(broken)


def test_the_rule_sees_function_local_imports(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from finetune.config import TaskConfig\n    return TaskConfig\n")
    assert imported_packages(module) == {("finetune", 2)}


def test_the_installed_project_needs_no_sys_path_edits():
    """``launch.sh --setup`` installs the checkout, benchmarks included (editable): no product module and no
    benchmark edits ``sys.path``."""
    edits = [
        f"{path.relative_to(ROOT)}"
        for package in ALLOWED
        for path in sorted((ROOT / package).rglob("*.py"))
        if "sys.path.insert" in path.read_text(encoding="utf-8")
    ]
    assert not edits, edits
