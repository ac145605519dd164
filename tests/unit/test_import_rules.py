"""The import rules of the layout, checked on the source (AST), not by convention."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "include" / "notes_migration"
# The roles, innermost first: a module may import its own role and the roles before it, never one after it
# (domain ← stores ← run ← ops ← tasks). Ops actions reuse the steps of a run; a run never calls an Ops action.
LAYERS = ("domain", "stores", "run", "ops", "tasks")
IO_LIBRARIES = (
    "pymongo",
    "bson",
    "psycopg",
    "psycopg2",
    "boto3",
    "botocore",
    "fastapi",
    "httpx",
    "requests",
    "airflow",
)


def imports_of(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def package_imports(path: Path) -> set[str]:
    """The package's own modules that `path` imports (at any depth: a lazy import inside a function counts)."""
    return {m for m in imports_of(path) if m in MODULES and m.count(".") >= 2}


def layer(module: str) -> int:
    return LAYERS.index(module.split(".")[1])


def test_every_module_lives_in_a_role():
    loose = [m for m, p in MODULES.items() if p.parent == PACKAGE and p.name != "__init__.py"]
    assert not loose, f"modules outside domain/stores/run/ops/tasks: {loose}"


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m.count(".") >= 2))
def test_imports_point_inwards(module):
    bad = sorted(m for m in package_imports(MODULES[module]) if layer(m) > layer(module))
    assert not bad, f"{module} imports outer roles: {bad} (allowed: {LAYERS[: layer(module) + 1]})"


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m.startswith("notes_migration.domain.")))
def test_domain_modules_do_no_io(module):
    bad = {m for m in imports_of(MODULES[module]) if m.split(".")[0] in IO_LIBRARIES}
    assert not bad, f"{module} imports {sorted(bad)}"


def test_the_package_has_no_import_cycle():
    graph = {m: package_imports(p) - {m} for m, p in MODULES.items() if m.count(".") >= 2}
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                raise AssertionError("import cycle: " + " → ".join(path[path.index(nxt) :] + [nxt]))
            if nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)


def test_the_logic_package_never_imports_fastapi_or_the_plugin():
    for path in PACKAGE.rglob("*.py"):
        bad = {m for m in imports_of(path) if m.split(".")[0] in ("fastapi", "starlette", "crm_notes_migration_ops")}
        assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"


def test_dag_files_import_only_the_contract_the_operator_and_airflow():
    allowed = (
        "notes_migration.domain.contract",
        "notes_migration.tasks.lazy",
        "notes_migration.tasks.attachment_relink",
        "notes_migration.tasks.params",
        "notes_migration.tasks.notifiers",  # the providers' notifiers, built from connection ids only
        "notes_migration.tasks.rollout_operators",  # the rollout's lane and approval operators
    )
    for path in (ROOT / "dags").glob("*.py"):
        for mod in imports_of(path):
            top = mod.split(".")[0]
            if top in sys.stdlib_module_names or top in ("__future__", "airflow"):
                continue
            assert mod.startswith(allowed), f"{path.name} imports {mod}"


def test_loading_the_plugin_imports_no_driver_or_sanitiser():
    code = (
        "import sys; sys.path.insert(0, 'plugins');"
        "import crm_notes_migration_plugin;"
        "heavy=[m for m in ('pymongo','psycopg','psycopg2','boto3','bleach','nh3') if m in sys.modules];"
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"loading the plugin imported {out.stdout.strip()}"
