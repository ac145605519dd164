"""The one registry of the CIDs the tests use on the shared servers (the CRM PostgreSQL, the S3 buckets and
the tests' CDP database): test module → the CIDs it owns. A module seeds, runs and wipes only its own CIDs,
so modules never disturb each other, and nothing here touches the benchmarks' or the demo's CIDs.

    from tests.cids import cids
    CID, OTHER = cids(__name__)          # the module's CIDs, in order

tests/unit/test_cid_registry.py fails on overlapping ranges, on a listed module that does not exist, on a
range that takes a benchmark or demo CID, and on a module that seeds a literal CID outside its own range.
"""

from __future__ import annotations


def span(first: int, last: int | None = None) -> range:
    """CIDs first…last, both included (one CID when `last` is left out)."""
    return range(first, (first if last is None else last) + 1)


# the demo pair (scripts/demo.sh, scripts/airflow.sh up): shared on purpose by the modules that reseed them
DEMO = (100, 5000)
DEMO_USERS = (
    "tests.integration.test_migration_e2e",
    "tests.stack.test_migration_stack",
    "tests.browser.test_ops_journey",
)
# the benchmarks' CIDs (benchmarks/page_path.py, stack.py, fleet.py): no test may use them
BENCHMARKS = (span(8000, 8001), span(8100, 8101), span(8200, 8332))

REGISTRY: dict[str, tuple[range, ...]] = {
    "tests.integration.test_migration_e2e": (span(1001, 1099),),
    "tests.integration.test_stores": (span(1100, 1109),),
    "tests.integration.test_run_snapshot": (span(1120, 1121),),
    "tests.integration.test_packed_task_pages": (span(1130, 1135),),
    "tests.integration.test_attachments": (span(2001, 2051),),
    "tests.integration.test_seed_demo": (span(2052),),
    "tests.fleet": (span(3001, 3005),),  # NOT_STARTED, IN_PROGRESS, HALTED, SUCCESS, WITH_ERRORS
    "tests.plugin.test_plugin_trigger": (span(3006, 3007),),
    "tests.plugin.test_plugin_ui": (span(3008),),
    "tests.plugin.test_plugin_refusals": (span(3010),),  # and the fleet's CIDs, read only
    "tests.plugin.plugin_support": (span(3999),),  # UNKNOWN_CID: never seeded
    "tests.fault.test_fault_injection": (span(6001, 6009),),
    "tests.fault.test_isolation_and_secrets": (span(6010, 6029),),
    "tests.fault.test_hostile_input": (span(6030, 6039),),
    "tests.integration.test_reason_vocabulary": (span(6500, 6507), span(6599)),  # 6599: never seeded
    "tests.stack.test_migration_stack": (span(7001, 7002), span(7099)),  # 7099: never seeded
    "tests.stack.test_scale_out_celery": (span(7010), span(7011, 7016)),  # 7011–7016: the deferred lanes
    "tests.stack.test_dead_run_stack": (span(7201, 7203),),
    "tests.stack.test_races_stack": (span(7301, 7305),),
    "tests.integration.test_parallel_halt": (span(8010),),
    "tests.integration.test_housekeeping": (span(9000, 9019),),
    "tests.plugin.test_plugin_error_log": (span(9020, 9021),),
    "tests.unit.test_error_log_rows": (span(9030),),  # a job document only, never seeded
    "tests.plugin.test_plugin_cancel": (span(9040, 9041),),
    "tests.integration.test_rollback": (span(9050, 9052),),
    "tests.plugin.test_plugin_rollback": (span(9060, 9061),),
    "tests.integration.test_dry_run_report": (span(9100, 9109),),
    "tests.plugin.test_plugin_dry_run": (span(9110, 9111),),
    "tests.plugin.test_plugin_retry": (span(9130, 9131),),
    "tests.stack.test_rollout_stack": (span(9200, 9209),),
    "tests.integration.test_retry_cli": (span(9250),),
    "tests.integration.test_one_writer": (span(9300, 9304),),
    "tests.integration.test_writers_e2e": (span(9400, 9419),),  # even: the mongo writer, odd: the http writer
    "tests.browser.test_ops_journey": (span(9500),),  # flag off: the refusal; and the demo CID 5000
    "tests.browser.test_signoff_xss": (span(9501),),  # the XSS fixtures as notes
    "tests.stack.test_approval_stack": (span(9600, 9604),),
}


def cids(module: str) -> list[int]:
    """Every CID registered for `module` (its `__name__`), in order."""
    try:
        ranges = REGISTRY[module]
    except KeyError:
        raise KeyError(f"{module} has no CIDs in tests/cids.py: register a free range there") from None
    return [cid for r in ranges for cid in r]


def owner(cid: int) -> str | None:
    """The module that owns `cid`, if any."""
    return next((m for m, ranges in REGISTRY.items() if any(cid in r for r in ranges)), None)
