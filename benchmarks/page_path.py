"""Benchmark (not a test): the page path of crm_notes_migration against the local services.

Prints, from one run on the 5,000-note demo CID (5000):
  * notes/s of the page path (extract + transform + insert + bookkeeping, as migrate_page does it),
  * the raw ceiling beside it: bare insert_many of the same prepared documents into the same
    server, and the bare extract query; and their ratio,
  * the sanitiser's cost per note (fast path and bleach path), P95 batch insert time,
  * peak memory (tracemalloc) of a page task, for pages of a small and a large CID.

    scripts/benchmark.sh            # seeds CIDs 5000 and 20000 first
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import tracemalloc
import uuid

from tests.support.seed import SeedSpec, company_for, seed

from notes_migration import cdp_store, crm_source, job_store, migration
from notes_migration.config import RunConfig
from notes_migration.connections import cdp_database, crm_connection
from notes_migration.html import _bleach_fixpoint, _fast_path, normalise


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[-1] if len(values) >= 2 else (values[0] if values else 0.0)


def fresh_job(crm, db, cid: int, batch_size: int) -> str:
    cfg = RunConfig(cid=cid, company_sso_id=company_for(cid), batch_size=batch_size, force_rerun=True)
    job = migration.start_job(crm, db, cfg, run_id=f"bench-{uuid.uuid4()}", triggered_by="benchmark", flag_cids=[cid])
    return job["job_id"]


def page_path(crm, db, cid: int, batch_size: int, *, trace_memory: bool = False, max_pages: int = 0) -> dict:
    """Runs migrate_page over the CID's pages as the mapped tasks do (tracemalloc only when asked:
    it slows Python code several times, so timings and memory come from separate passes)."""
    job_id = fresh_job(crm, db, cid, batch_size)
    t = time.perf_counter()
    migration.run_coverage(crm, db, job_id)  # once per run: resolves every person for the pages
    pages = migration.plan(crm, db, job_id)[: max_pages or None]
    per_run_s = time.perf_counter() - t
    walls, inserts, peaks, written = [], [], [0], 0
    for page in pages:
        if trace_memory:
            tracemalloc.start()
        t = time.perf_counter()
        summary = migration.migrate_page(crm, db, job_id, page)
        walls.append(time.perf_counter() - t)
        if trace_memory:
            peaks.append(tracemalloc.get_traced_memory()[1])
            tracemalloc.stop()
        written += summary["migrated"] + summary["already_migrated"] + summary["failed"]
    phases = dict.fromkeys(("read", "transform", "write", "total"), 0.0)
    for result in job_store.page_results(db, job_id):
        inserts.append(result["timings_s"]["write"])
        for key in phases:
            phases[key] += result["timings_s"][key]
    phases["bookkeeping"] = sum(walls) - phases["read"] - phases["transform"] - phases["write"]
    job = job_store.get_job(db, job_id)
    job_store.release_lock(db, cid, job["run_id"])
    return {
        "job_id": job_id,
        "pages": len(pages),
        "notes": written,
        "seconds": sum(walls) + per_run_s,
        "notes_per_s": written / (sum(walls) + per_run_s),
        "coverage_and_plan_s": round(per_run_s, 3),
        "p95_page_s": p95(walls),
        "p95_insert_s": p95(inserts),
        "peak_page_bytes": max(peaks),
        "phase_seconds": {k: round(v, 3) for k, v in phases.items()},
    }


def raw_ceiling(crm, db, cid: int, batch_size: int) -> dict:
    cfg = RunConfig(cid=cid, company_sso_id=company_for(cid), batch_size=batch_size)
    pages = crm_source.plan_pages(crm, cid, batch_size)
    t = time.perf_counter()
    rows_by_page = [crm_source.read_page(crm, cid, p.lo_id, p.hi_id) for p in pages]
    extract_s = time.perf_counter() - t
    rows = sum(len(r) for r in rows_by_page)
    _, contacts = migration.resolve_all_persons(crm, db, cid, cfg.company_sso_id, cfg.include_activities)
    docs_by_page = [[d.doc for d in migration.transform_page(r, db, cfg, contacts) if d.doc] for r in rows_by_page]
    scratch = db["bench_raw_contact_notes"]
    scratch.drop()
    scratch.create_index(cdp_store.NOTE_KEY, name=cdp_store.NOTE_KEY_NAME, unique=True)
    batch_times = []
    for docs in docs_by_page:
        t = time.perf_counter()
        scratch.insert_many(docs, ordered=False)
        batch_times.append(time.perf_counter() - t)
    scratch.drop()
    n = sum(len(d) for d in docs_by_page)
    notes = [r.note for page in rows_by_page for r in page]
    t = time.perf_counter()
    fast_hits = sum(1 for x in notes if x and _fast_path(x) is not None)
    fast_s = time.perf_counter() - t
    t = time.perf_counter()
    for x in notes:
        normalise(x)
    normalise_s = time.perf_counter() - t
    t = time.perf_counter()
    for x in notes:
        if x:
            _bleach_fixpoint(x)
    bleach_s = time.perf_counter() - t
    return {
        "extract_rows": rows,
        "extract_s": extract_s,
        "extract_rows_per_s": rows / extract_s,
        "insert_docs": n,
        "insert_s": sum(batch_times),
        "insert_notes_per_s": n / sum(batch_times),
        "p95_raw_insert_s": p95(batch_times),
        "normalise_ms_per_note": 1000 * normalise_s / len(notes),
        "bleach_ms_per_note": 1000 * bleach_s / len(notes),
        "fast_path_ms_per_note": 1000 * fast_s / len(notes),
        "fast_path_share": fast_hits / len(notes),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--no-seed", action="store_true")
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--large-notes", type=int, default=20000, help="size of the second CID for the memory check")
    args = parser.parse_args(argv)
    db = cdp_database()
    if not args.no_seed:
        with crm_connection(read_only=False) as rw:
            for spec in (SeedSpec(cid=5000, notes=5000), SeedSpec(cid=20000, notes=args.large_notes)):
                seed(spec, rw, db)
    with crm_connection() as crm:
        crm_source.read_page(crm, 5000, 0, 10**12)  # warm the CRM's cache for both measurements
        raw = raw_ceiling(crm, db, 5000, args.batch_size)
        page = page_path(crm, db, 5000, args.batch_size)
        small_mem = page_path(crm, db, 5000, args.batch_size, trace_memory=True, max_pages=4)
        large_mem = page_path(crm, db, 20000, args.batch_size, trace_memory=True, max_pages=4)
    serial_ceiling = 1.0 / (1.0 / raw["extract_rows_per_s"] + 1.0 / raw["insert_notes_per_s"])
    report = {
        "cid": 5000,
        "batch_size": args.batch_size,
        "page_path_notes_per_s": round(page["notes_per_s"], 1),
        "raw_insert_notes_per_s": round(raw["insert_notes_per_s"], 1),
        "raw_extract_rows_per_s": round(raw["extract_rows_per_s"], 1),
        "ratio_page_path_to_raw_insert": round(page["notes_per_s"] / raw["insert_notes_per_s"], 3),
        "ratio_page_path_to_raw_extract_plus_insert": round(page["notes_per_s"] / serial_ceiling, 3),
        "normalise_ms_per_note": round(raw["normalise_ms_per_note"], 4),
        "bleach_ms_per_note_if_every_note_took_it": round(raw["bleach_ms_per_note"], 4),
        "fast_path_ms_per_note": round(raw["fast_path_ms_per_note"], 4),
        "fast_path_share": round(raw["fast_path_share"], 3),
        "p95_page_s": round(page["p95_page_s"], 3),
        "page_path_phase_seconds": {**page["phase_seconds"], "coverage_and_plan_once": page["coverage_and_plan_s"]},
        "p95_batch_insert_s_page_path": round(page["p95_insert_s"], 4),
        "p95_batch_insert_s_raw": round(raw["p95_raw_insert_s"], 4),
        "peak_page_task_bytes_cid_5000": small_mem["peak_page_bytes"],
        f"peak_page_task_bytes_cid_20000_{args.large_notes}_notes": large_mem["peak_page_bytes"],
        "notes_per_hour_page_path": round(page["notes_per_s"] * 3600),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
