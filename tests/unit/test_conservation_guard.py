"""Conservation after every end-to-end run in the suite (issue 10), checked on the test sources (AST).

A migration run in a test is either `<dag>.test(run_conf=...)` (dag.test() of the migration DAG) or a test that
drives the steps itself through `batch.migrate_page(...)`. Every function holding a dag.test() call must also
call `assert_run_conserved` / `assert_conserved` (the shared wrappers do: conftest's `run_dag`,
tests/helpers.run_migration); every module driving migrate_page must call `assert_conserved` somewhere.
The exceptions are listed with their reason; the list must match exactly, so it only ever shrinks.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TESTS = ROOT / "tests"
CHECKS = {"assert_conserved", "assert_run_conserved"}

# (module, function or "<module>") → why it has no conservation check.
UNCHECKED = {
    # the page is called after a cancel only to show it raises AlreadyHalted and reads and writes nothing
    ("tests/plugin/test_plugin_cancel.py", "<module>"): "page after a cancel, no run",
}


def _name(func: ast.expr) -> str | None:
    if isinstance(func, ast.Attribute):
        return func.attr
    if isinstance(func, ast.Name):
        return func.id
    return None


def _calls(node: ast.AST) -> list[ast.Call]:
    return [n for n in ast.walk(node) if isinstance(n, ast.Call)]


def _is_dag_test(call: ast.Call) -> bool:
    return _name(call.func) == "test" and any(k.arg == "run_conf" for k in call.keywords)


def unchecked_runs(path: Path, root: Path = ROOT) -> set[tuple[str, str]]:
    tree = ast.parse(path.read_text())
    rel = str(path.relative_to(root))
    out: set[tuple[str, str]] = set()
    functions = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]
    for fn in functions:
        calls = _calls(fn)
        direct = [c for c in calls if _is_dag_test(c)]
        nested = {id(c) for inner in ast.walk(fn) if inner is not fn and inner in functions for c in _calls(inner)}
        if any(id(c) not in nested for c in direct) and not any(_name(c.func) in CHECKS for c in calls):
            out.add((rel, fn.name))
    module_calls = _calls(tree)
    drives_pages = any(
        _name(c.func) == "migrate_page" and isinstance(c.func, ast.Attribute) and _name(c.func.value) == "batch"
        for c in module_calls
    )
    if drives_pages and not any(_name(c.func) in CHECKS for c in module_calls):
        out.add((rel, "<module>"))
    return out


def test_the_guard_sees_a_run_without_a_check(tmp_path):
    bare = tmp_path / "tests" / "test_bare.py"
    bare.parent.mkdir()
    bare.write_text("def test_x(migration_dag):\n    migration_dag.test(run_conf={'cid': 1})\n")
    checked = tmp_path / "tests" / "test_checked.py"
    checked.write_text(
        "def test_y(migration_dag, crm, cdp):\n"
        "    run = migration_dag.test(run_conf={'cid': 1})\n"
        "    assert_run_conserved(crm, cdp, run)\n"
    )
    pages = tmp_path / "tests" / "test_pages.py"
    pages.write_text("def drive(crm, cdp, job):\n    batch.migrate_page(crm, cdp, job, {})\n")
    assert unchecked_runs(bare, tmp_path) == {("tests/test_bare.py", "test_x")}
    assert unchecked_runs(checked, tmp_path) == set()
    assert unchecked_runs(pages, tmp_path) == {("tests/test_pages.py", "<module>")}


def test_every_migration_run_in_the_suite_checks_conservation():
    found: set[tuple[str, str]] = set()
    for path in sorted(TESTS.rglob("*.py")):
        if path.resolve() != Path(__file__).resolve():
            found |= unchecked_runs(path)
    new = sorted(found - set(UNCHECKED))
    assert not new, f"runs with no conservation check (call assert_conserved / use run_dag or run_migration): {new}"
    fixed = sorted(set(UNCHECKED) - found)
    assert not fixed, f"these check conservation now: take them off UNCHECKED: {fixed}"
