"""The import rules of the layout, checked on the source (AST), not by convention."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "include" / "notes_migration"
PURE = ("accounting", "attachment_plan", "codes", "contract", "html", "plain", "resolve", "status", "transform")
IO_MODULES = ("cdp_store", "job_store", "connections", "s3_store", "copy_engine", "migration", "ops")
IO_LIBRARIES = ("pymongo", "bson", "psycopg", "psycopg2", "boto3", "botocore", "fastapi", "httpx", "requests")


def imports_of(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def test_the_logic_package_never_imports_fastapi_or_the_plugin():
    for path in PACKAGE.rglob("*.py"):
        bad = {m for m in imports_of(path) if m.split(".")[0] in ("fastapi", "starlette", "crm_notes_migration_ops")}
        assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"


@pytest.mark.parametrize("module", PURE)
def test_pure_modules_import_no_io_module(module):
    mods = imports_of(PACKAGE / f"{module}.py")
    bad = {m for m in mods if m.split(".")[0] in IO_LIBRARIES or any(m == f"notes_migration.{io}" for io in IO_MODULES)}
    bad |= {m for m in mods for io in IO_MODULES if m.startswith(f"notes_migration.{io}.")}
    assert not bad, f"{module}.py imports {sorted(bad)}"


def test_dag_files_import_only_the_contract_the_operators_and_airflow():
    allowed = ("notes_migration.contract", "notes_migration.lazy", "notes_migration.operators")
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
