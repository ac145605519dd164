"""Benchmark (not a test): the page path of crm_notes_migration against the local services.

From one run, on a 5,000-note CID (8000) and, for memory and the per-run steps, a 100,000-note CID (8001):
  * the raw ceilings: the bare extract query and a bare `insert_many` of the same prepared documents into
    the same collection of the same server;
  * the page path (`batch.migrate_page` over every page: extract + transform + decide + halt re-check +
    insert + bookkeeping) and its ratio to the raw insert, with its per-phase seconds;
  * the naive baseline: one `insert_one` per note, no batching, the same extract and transform;
  * the peak RSS (VmHWM) of a page task's process for both CIDs, and of the coverage step + plan_pages.

    python -m benchmarks.page_path [--no-seed] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import subprocess
import sys
import time
import uuid
from typing import Any

from devtools.seed import SeedSpec, company_for, ensure_schema, seed
from notes_migration.domain.config import (
    ATTACHMENT_PAGES,
    AUDIT,
    CONTACT_NOTES,
    EVENTS,
    JOBS,
    NOTE_LOG,
    PAGES,
    PERSON_MAPS,
    RunConfig,
    Thresholds,
)
from notes_migration.run import batch, coverage, plan, start
from notes_migration.stores import cdp_store, crm_source, job_store
from notes_migration.stores.connections import cdp_database, crm_connection

SMALL = SeedSpec(cid=8000, notes=5000, upload_files=False)
LARGE = SeedSpec(cid=8001, notes=100_000, upload_files=False)


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[-1] if len(values) >= 2 else (values[0] if values else 0.0)


def ensure_seeded(spec: SeedSpec, db) -> bool:
    """Seed the CID unless the CRM already holds exactly its notes (seeding 100,000 notes takes ~10 s)."""
    with crm_connection(read_only=False) as rw:
        ensure_schema(rw)  # a fresh cluster has none yet
        with rw.cursor() as cur:
            cur.execute("SELECT count(*) FROM crm_notes WHERE organization_id = %s", (spec.cid,))
            have = cur.fetchone()[0]
        if have == spec.notes and db["contacts"].count_documents({"company_sso_id": spec.company_sso_id}) > 0:
            return False
        seed(spec, rw, db)
        rw.commit()
    return True


def clear_notes(db, cid: int, chunk: int = 50_000) -> int:
    """Delete the CID's migrated notes. FerretDB v1 deletes all matches in one statement and refuses one
    of more than 65,535 parameters (a 71,000-note CID did), and evaluates `$in` per document against the
    whole list (chunks by `_id $in` took 169 s): above `chunk` notes, legacy-id ranges of ≤ `chunk` notes."""
    query = {"company_sso_id": company_for(cid), "legacy_crm_note_id": {"$exists": True}}
    ids = sorted(d["legacy_crm_note_id"] for d in db[CONTACT_NOTES].find(query, {"_id": 0, "legacy_crm_note_id": 1}))
    if len(ids) <= chunk:
        return db[CONTACT_NOTES].delete_many(query).deleted_count if ids else 0
    deleted = 0
    for i in range(0, len(ids), chunk):
        part = ids[i : i + chunk]
        ranged = {"company_sso_id": query["company_sso_id"], "legacy_crm_note_id": {"$gte": part[0], "$lte": part[-1]}}
        deleted += db[CONTACT_NOTES].delete_many(ranged).deleted_count
    return deleted


def clear_bookkeeping(db, cid: int) -> dict[str, int]:
    """Delete what the CID's earlier runs recorded (note log, events, page and attachment results, audit,
    person maps), so every measured run starts from the same collections: each run of the 100,000-note CID
    adds ~30,000 note-log entries, ~10,000 events and a 25,000-person map, and FerretDB v1 scans a
    collection whole for any filter (857 maps of earlier runs, 144 MB, had piled up here by 2026-12-03). One job
    at a time: FerretDB v1 refuses to delete more than 65,535 documents in one statement."""
    deleted = dict.fromkeys((NOTE_LOG, EVENTS, PAGES, ATTACHMENT_PAGES, AUDIT, PERSON_MAPS), 0)
    for job in db[JOBS].find({"cid": cid}, {"_id": 1}):
        for c in deleted:
            deleted[c] += db[c].delete_many({"job_id": job["_id"]}).deleted_count
    return deleted


def fresh_job(crm, db, cid: int, batch_size: int, writer: str = "mongo") -> dict:
    thresholds = Thresholds(writer=writer)
    cfg = RunConfig(
        cid=cid, company_sso_id=company_for(cid), batch_size=batch_size, force_rerun=True, thresholds=thresholds
    )
    return start.start_job(crm, db, cfg, run_id=f"bench-{uuid.uuid4()}", triggered_by="benchmark", flag_cids=[cid])


def prepared(crm, db, cid: int, batch_size: int) -> dict[str, Any]:
    """The raw extract (bare queries) and the documents the page path would insert, built once."""
    cfg = RunConfig(cid=cid, company_sso_id=company_for(cid), batch_size=batch_size)
    batches = crm_source.plan_pages(crm, cid, batch_size)
    t = time.perf_counter()
    rows_by_batch = [crm_source.read_page(crm, cid, b.lo_id, b.hi_id) for b in batches]
    extract_s = time.perf_counter() - t
    _, contacts = coverage.resolve_all_persons(crm, db, cid, cfg.company_sso_id, cfg.include_activities)
    users = cdp_store.company_users(db, cfg.company_sso_id)
    t = time.perf_counter()
    decisions = [batch.transform_page(r, db, cfg, contacts, users=users) for r in rows_by_batch]
    transform_s = time.perf_counter() - t
    docs = [[d.doc for d in ds if d.doc is not None] for ds in decisions]
    return {
        "cfg": cfg,
        "batches": batches,
        "rows": sum(map(len, rows_by_batch)),
        "extract_s": extract_s,
        "transform_s": transform_s,
        "docs": docs,
        "contacts": contacts,
        "users": users,
    }


def raw_insert(db, cid: int, docs_by_batch: list[list[dict]]) -> dict[str, Any]:
    clear_notes(db, cid)
    times = []
    for docs in docs_by_batch:
        copies = [{k: v for k, v in d.items() if k != "_id"} for d in docs]
        t = time.perf_counter()
        db[CONTACT_NOTES].insert_many(copies, ordered=False)
        times.append(time.perf_counter() - t)
    clear_notes(db, cid)
    n = sum(map(len, docs_by_batch))
    return {"docs": n, "seconds": sum(times), "notes_per_s": n / sum(times), "p95_batch_s": p95(times)}


def page_path(crm, db, cid: int, batch_size: int, writer: str = "mongo") -> dict[str, Any]:
    """migrate_page over every page of a fresh job, as the mapped tasks do (one after another), through `writer`."""
    clear_notes(db, cid)
    job = fresh_job(crm, db, cid, batch_size, writer)
    try:
        t = time.perf_counter()
        coverage.run_coverage(crm, db, job["job_id"])
        pages = plan.plan(crm, db, job["job_id"])
        per_run_s = time.perf_counter() - t
        walls, notes = [], 0
        for page in pages:
            t = time.perf_counter()
            s = batch.migrate_page(crm, db, job["job_id"], page)
            walls.append(time.perf_counter() - t)
            notes += s["migrated"] + s["already_migrated"] + s["failed"]
        phases = dict.fromkeys(("read", "transform", "check", "write"), 0.0)
        inserts = []
        for r in job_store.page_results(db, job["job_id"]):
            inserts.append(r["timings_s"]["write"])
            for k in phases:
                phases[k] += r["timings_s"].get(k, 0.0)
        phases["bookkeeping_after_insert"] = sum(walls) - sum(phases.values())
    finally:
        job_store.release_lock(db, cid, job["run_id"])
        clear_notes(db, cid)
    return {
        "pages": len(pages),
        "notes": notes,
        "seconds": sum(walls),
        "notes_per_s": notes / sum(walls),
        "notes_per_s_with_coverage_and_plan": notes / (sum(walls) + per_run_s),
        "coverage_and_plan_s": per_run_s,
        "p95_page_s": p95(walls),
        "p95_insert_s": p95(inserts),
        "phase_seconds": {k: round(v, 4) for k, v in phases.items()},
    }


def _pages_in_process(job_id: str, pages: list[dict]) -> tuple[int, float]:
    """One worker process of page_path_parallel: its own CRM and CDP connections, its pages in order."""
    logging.disable(logging.WARNING)
    db = cdp_database()
    notes, busy = 0, 0.0
    with crm_connection() as crm:
        for page in pages:
            t = time.perf_counter()
            s = batch.migrate_page(crm, db, job_id, page)
            busy += time.perf_counter() - t
            notes += s["migrated"] + s["already_migrated"] + s["failed"]
    return notes, busy


def page_path_parallel(crm, db, cid: int, batch_size: int, processes: int = 4) -> dict[str, Any]:
    """The page path as the DAG runs it: `processes` page tasks at once (migrate_page's
    max_active_tis_per_dagrun), each a process of its own taking every `processes`-th page."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    clear_notes(db, cid)
    job = fresh_job(crm, db, cid, batch_size)
    try:
        coverage.run_coverage(crm, db, job["job_id"])
        pages = plan.plan(crm, db, job["job_id"])
        shares = [pages[i::processes] for i in range(processes)]
        with ProcessPoolExecutor(max_workers=processes, mp_context=mp.get_context("spawn")) as pool:
            list(pool.map(_pages_in_process, [job["job_id"]] * processes, [[]] * processes))  # start-up, not timed
            t = time.perf_counter()
            done = list(pool.map(_pages_in_process, [job["job_id"]] * processes, shares))
            wall = time.perf_counter() - t
    finally:
        job_store.release_lock(db, cid, job["run_id"])
        clear_notes(db, cid)
    notes = sum(n for n, _ in done)
    return {"processes": processes, "pages": len(pages), "notes": notes, "seconds": wall, "notes_per_s": notes / wall}


def naive(crm, db, prep: dict[str, Any], max_batches: int) -> dict[str, Any]:
    """One insert_one per note, no batching, the same extract and transform (a few batches: it is slow)."""
    cfg = prep["cfg"]
    clear_notes(db, cfg.cid)
    n = 0
    t = time.perf_counter()
    for b in prep["batches"][:max_batches]:
        rows = crm_source.read_page(crm, cfg.cid, b.lo_id, b.hi_id)
        for d in batch.transform_page(rows, db, cfg, prep["contacts"], users=prep["users"]):
            if d.doc is not None:
                db[CONTACT_NOTES].insert_one(d.doc)
                n += 1
    seconds = time.perf_counter() - t
    clear_notes(db, cfg.cid)
    return {
        "batches": min(max_batches, len(prep["batches"])),
        "notes": n,
        "seconds": seconds,
        "notes_per_s": n / seconds,
    }


def subprocess_step(mode: str, **kw: str) -> dict[str, Any]:
    args = [sys.executable, "-m", "benchmarks.page_task", mode]
    for k, v in kw.items():
        args += [f"--{k.replace('_', '-')}", v]
    done = subprocess.run(args, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def memory(crm, db, spec: SeedSpec, batch_size: int, pages_measured: int) -> dict[str, Any]:
    """Peak RSS of the coverage + plan step, and of a page task running `pages_measured` middle pages."""
    clear_notes(db, spec.cid)
    job = fresh_job(crm, db, spec.cid, batch_size)
    try:
        coverage = subprocess_step("coverage", job_id=job["job_id"])
        pages = job_store.get_job(db, job["job_id"])["pages_total"]
        slices = plan.plan(crm, db, job["job_id"])
        mid = max(0, len(slices) // 2 - pages_measured // 2)
        task = subprocess_step("pages", job_id=job["job_id"], pages=json.dumps(slices[mid : mid + pages_measured]))
    finally:
        job_store.release_lock(db, spec.cid, job["run_id"])
        clear_notes(db, spec.cid)
    return {
        "cid": spec.cid,
        "notes": spec.notes,
        "pages_total": pages,
        "coverage_and_plan": coverage,
        "page_task": task,
    }


def benchmark_page_path(*, batch_size: int = 500, rounds: int = 2, naive_batches: int = 2, seed_first: bool = True):
    logging.disable(logging.WARNING)  # per-note event log lines would be measured otherwise
    db = cdp_database()
    seeded = [s.cid for s in (SMALL, LARGE) if seed_first and ensure_seeded(s, db)]
    cid = SMALL.cid
    with crm_connection() as crm:
        crm_source.read_page(crm, cid, 0, 10**12)  # warm the CRM's cache
        prep = prepared(crm, db, cid, batch_size)
        raws, paths = [], []
        for _ in range(rounds):  # alternated, best of each: the servers are shared with other work
            raws.append(raw_insert(db, cid, prep["docs"]))
            paths.append(page_path(crm, db, cid, batch_size))
        raw = max(raws, key=lambda r: r["notes_per_s"])
        page = max(paths, key=lambda r: r["notes_per_s"])
        parallel = max(
            (page_path_parallel(crm, db, cid, batch_size) for _ in range(rounds)), key=lambda r: r["notes_per_s"]
        )
        slow = naive(crm, db, prep, naive_batches)
        baseline = subprocess_step("baseline")
        mem_small = memory(crm, db, SMALL, batch_size, 4)
        mem_large = memory(crm, db, LARGE, batch_size, 4)
    logging.disable(logging.NOTSET)
    extract_rps = prep["rows"] / prep["extract_s"]
    return {
        "cid": cid,
        "batch_size": batch_size,
        "seeded_now": seeded,
        "rounds": rounds,
        "raw_extract_rows_per_s": round(extract_rps, 1),
        "raw_insert_notes_per_s": round(raw["notes_per_s"], 1),
        "raw_insert_all_rounds": [round(r["notes_per_s"], 1) for r in raws],
        "page_path_notes_per_s": round(page["notes_per_s"], 1),
        "page_path_all_rounds": [round(r["notes_per_s"], 1) for r in paths],
        "page_path_notes_per_s_with_coverage_and_plan": round(page["notes_per_s_with_coverage_and_plan"], 1),
        "ratio_page_path_to_raw_insert": round(page["notes_per_s"] / raw["notes_per_s"], 3),
        "target_ratio": 0.5,
        "page_path_4_processes_notes_per_s": round(parallel["notes_per_s"], 1),
        "ratio_page_path_4_processes_to_raw_insert": round(parallel["notes_per_s"] / raw["notes_per_s"], 3),
        "naive_notes_per_s": round(slow["notes_per_s"], 1),
        "naive_notes": slow["notes"],
        "ratio_naive_to_page_path": round(slow["notes_per_s"] / page["notes_per_s"], 3),
        "bare_transform_ms_per_row": round(1000 * prep["transform_s"] / prep["rows"], 4),
        "page_path_phase_seconds": page["phase_seconds"],
        "page_path_seconds": round(page["seconds"], 3),
        "raw_insert_seconds": round(raw["seconds"], 3),
        "coverage_and_plan_s_cid_5000": round(page["coverage_and_plan_s"], 3),
        "p95_page_s": round(page["p95_page_s"], 4),
        "p95_batch_insert_s_page_path": round(page["p95_insert_s"], 4),
        "p95_batch_insert_s_raw": round(raw["p95_batch_s"], 4),
        "notes_per_hour_page_path": round(page["notes_per_s"] * 3600),
        "memory": {
            "baseline_process": baseline,
            "small": mem_small,
            "large": mem_large,
            "page_task_hwm_ratio_large_to_small": round(
                mem_large["page_task"]["vm_hwm_kib"] / mem_small["page_task"]["vm_hwm_kib"], 3
            ),
            "target_ratio_max": 1.2,
        },
    }


def benchmark_writers(*, batch_size: int = 500, rounds: int = 1, seed_first: bool = True) -> dict[str, Any]:
    """The page path of the 5,000-note CID through each writer: MongoDB directly, and the CDP notes API (the
    reference implementation, devtools/cdp_notes_api.py, in a process of its own on loopback over the same
    database; so the HTTP figure is the writer's cost plus the reference service's, on the same machine)."""
    import os

    import httpx

    from devtools.ports import free_port

    logging.disable(logging.WARNING)
    db = cdp_database()
    if seed_first:
        ensure_seeded(SMALL, db)
    port = free_port()
    token = "bench-s2s-token"
    env = {**os.environ, "CDP_NOTES_API_S2S_TOKENS": token}
    server = subprocess.Popen(
        [sys.executable, "-m", "devtools.cdp_notes_api", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    os.environ["AIRFLOW_CONN_CDP_NOTES_API"] = json.dumps(
        {"conn_type": "http", "host": "127.0.0.1", "port": port, "schema": "http", "password": token}
    )
    try:
        for _ in range(150):
            try:
                httpx.get(f"http://127.0.0.1:{port}/docs", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.1)
        out: dict[str, Any] = {"cid": SMALL.cid, "batch_size": batch_size, "rounds": rounds}
        with crm_connection() as crm:
            crm_source.read_page(crm, SMALL.cid, 0, 10**12)
            for writer in ("mongo", "http"):
                runs = [page_path(crm, db, SMALL.cid, batch_size, writer) for _ in range(rounds)]
                best = max(runs, key=lambda r: r["notes_per_s"])
                out[writer] = {
                    "page_path_notes_per_s": round(best["notes_per_s"], 1),
                    "all_rounds": [round(r["notes_per_s"], 1) for r in runs],
                    "phase_seconds": best["phase_seconds"],
                }
        out["ratio_http_to_mongo"] = round(
            out["http"]["page_path_notes_per_s"] / out["mongo"]["page_path_notes_per_s"], 3
        )
        return out
    finally:
        server.terminate()
        server.wait(10)
        logging.disable(logging.NOTSET)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--no-seed", action="store_true")
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--writers", action="store_true", help="only the page path through each writer")
    args = parser.parse_args(argv)
    if args.writers:
        figures = benchmark_writers(batch_size=args.batch_size, rounds=args.rounds, seed_first=not args.no_seed)
        print(json.dumps(figures, indent=2, default=str))
        return
    figures = benchmark_page_path(batch_size=args.batch_size, rounds=args.rounds, seed_first=not args.no_seed)
    print(json.dumps(figures, indent=2, default=str))


if __name__ == "__main__":
    main()
