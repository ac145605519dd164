"""tests/cids.py, the one registry of the CIDs tests use: no two modules share a CID, no test takes a
benchmark's or the demo's CID, every module listed exists, and a module that seeds a CID written as a
literal (`SeedSpec(cid=1234, …)`) or through a module constant (`CID = 1234`) seeds one of its own."""

from __future__ import annotations

import ast
import itertools
from pathlib import Path

from tests.cids import BENCHMARKS, DEMO, DEMO_USERS, REGISTRY, cids, owner, span

TESTS = Path(__file__).resolve().parents[1]
ROOT = TESTS.parent


def _module_path(module: str) -> Path:
    return ROOT.joinpath(*module.split(".")).with_suffix(".py")


def _module_name(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts)


def _literal_int(node: ast.AST, constants: dict[str, int]) -> int | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, int):
        return node.value
    if isinstance(node, ast.Name):
        return constants.get(node.id)
    return None


def seeded_literals(source: str) -> set[int]:
    """The CIDs a module passes to SeedSpec as a literal, or as a module-level constant bound to a literal."""
    tree = ast.parse(source)
    constants: dict[str, int] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, int):
            constants.update({t.id: node.value.value for t in node.targets if isinstance(t, ast.Name)})
    found: set[int] = set()
    for node in ast.walk(tree):
        if not (
            isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", None)) == "SeedSpec"
        ):
            continue
        args = [kw.value for kw in node.keywords if kw.arg == "cid"] + node.args[:1]
        found |= {v for v in (_literal_int(a, constants) for a in args) if v is not None}
    return found


def test_no_two_modules_share_a_cid():
    clashes = [
        (a, b, sorted(set(cids(a)) & set(cids(b))))
        for a, b in itertools.combinations(REGISTRY, 2)
        if set(cids(a)) & set(cids(b))
    ]
    assert not clashes, clashes


def test_no_test_takes_a_benchmark_or_demo_cid():
    reserved = {cid for r in BENCHMARKS for cid in r} | set(DEMO)
    taken = {m: sorted(set(cids(m)) & reserved) for m in REGISTRY}
    assert not {m: c for m, c in taken.items() if c}
    assert {
        8000,
        8001,
        8100,
        8101,
        8200,
        8329,
        8332,
    } <= reserved  # benchmarks/page_path.py, stack.py, fleet.py, run_cost.py


def test_every_module_listed_exists_and_owns_some_cids():
    missing = [m for m in (*REGISTRY, *DEMO_USERS) if not _module_path(m).is_file()]
    assert not missing, f"tests/cids.py lists modules that do not exist: {missing}"
    assert all(cids(m) for m in REGISTRY)


def test_a_module_seeds_only_its_own_cids():
    wrong = {}
    for path in sorted(TESTS.rglob("*.py")):
        module = _module_name(path)
        allowed = set(cids(module)) if module in REGISTRY else set()
        if module in DEMO_USERS:
            allowed |= set(DEMO)
        outside = sorted(seeded_literals(path.read_text()) - allowed)
        if outside:
            wrong[module] = [(cid, owner(cid)) for cid in outside]
    assert not wrong, f"seeds CIDs outside its range in tests/cids.py (CID, its owner): {wrong}"


def test_the_checks_catch_what_they_should():
    assert seeded_literals("SeedSpec(cid=1234, notes=3)\nCID = 77\nx = SeedSpec(CID)") == {1234, 77}
    assert span(5) == range(5, 6) and list(span(1, 3)) == [1, 2, 3]
    assert owner(3003) == "tests.fleet" and owner(8000) is None
