"""Benchmark (not a test): what one small CID's migration run costs the machine under a real scheduler.

A private stack (`scripts/airflow.sh up` through devtools.stack.StackManager: LocalExecutor, fresh metadata DB,
CDP database `cdp_bench`), `--cids` small CIDs (8330 on, 60 notes each, no files: the fleet's typical CID),
then their runs one after another through Airflow's REST API. Figures: the machine's busy CPU seconds per run
(every process, minus the idle stack's rate measured just before over as long), the same split by Airflow
process (the LocalExecutor workers with the task processes they fork, the scheduler, the API server, the
DAG processor, the triggerer), wall seconds per run, and the task instances of the last run (those with no
duration never started on a worker). Where the fleet's 600 s go: a 2-core machine has ~1,200 CPU-s in 600 s.

    python -m benchmarks.run_cost [--cids 3] [--idle-s 20]
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from benchmarks.fleet import CLEAN, MIGRATION_DAG_ID, cpu_busy_s, save
from devtools.cdp_db import BENCH_DATABASE
from devtools.seed import SeedSpec, company_for, seed
from devtools.stack import ROOT, StackManager, wait_until
from notes_migration.stores.connections import cdp_database, crm_connection

FIRST_CID, NOTES = 8330, 60
OUT = ROOT / ".build" / "benchmark_run_cost.json"
PROCESSES = {  # Airflow process → a word of its command line (the LocalExecutor's workers are titled so)
    "workers_and_tasks": "LocalExecutor",
    "scheduler": "airflow scheduler",
    "api_server": "api_server",
    "dag_processor": "airflow dag-processor",
    "triggerer": "airflow triggerer",
}


def airflow_cpu_s() -> dict[str, float]:
    """CPU seconds so far of each Airflow process kind, the children it reaped included (forked tasks)."""
    import psutil

    out = dict.fromkeys(PROCESSES, 0.0)
    for proc in psutil.process_iter(["cmdline", "cpu_times"]):
        cmd = " ".join(proc.info.get("cmdline") or [])
        t = proc.info.get("cpu_times")
        for kind, word in PROCESSES.items():
            if t is not None and word in cmd:
                out[kind] += t.user + t.system + t.children_user + t.children_system
                break
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cids", type=int, default=3)
    parser.add_argument("--idle-s", type=float, default=20.0, help="seconds the idle stack's CPU rate is measured")
    args = parser.parse_args(argv)
    cids = [FIRST_CID + n for n in range(args.cids)]
    with crm_connection(read_only=False) as rw:
        for cid in cids:
            seed(SeedSpec(cid=cid, notes=NOTES, **CLEAN), rw, cdp_database())
        rw.commit()
    fig: dict[str, Any] = {"cids": cids, "notes_each": NOTES}
    manager = StackManager(cdp_database=BENCH_DATABASE)
    try:
        stack = manager.get("local")
        stack.set_flag(cids)
        time.sleep(args.idle_s)  # the DAG processor's first parses settle
        busy, t = cpu_busy_s(), time.monotonic()
        time.sleep(args.idle_s)
        idle_rate = (cpu_busy_s() - busy) / (time.monotonic() - t)
        before, busy, t = airflow_cpu_s(), cpu_busy_s(), time.monotonic()
        for cid in cids:
            with stack.client("ops") as c:
                body = {"logical_date": None, "conf": {"cid": cid, "company_sso_id": company_for(cid)}}
                resp = c.post(f"/api/v2/dags/{MIGRATION_DAG_ID}/dagRuns", json=body)
            assert resp.status_code == 200, resp.text
            run_id = resp.json()["dag_run_id"]

            def ended(run_id: str = run_id) -> tuple[bool, str]:
                state = stack.dag_run(run_id)["state"]
                return state in ("success", "failed"), state

            assert wait_until(f"run {run_id}", 300, ended, 0.5) == "success", run_id
        wall = time.monotonic() - t
        used = cpu_busy_s() - busy - idle_rate * wall
        after = airflow_cpu_s()
        n = len(cids)
        fig.update(
            idle_cpu_rate=round(idle_rate, 3),
            wall_per_run_s=round(wall / n, 2),
            cpu_per_run_s=round(used / n, 2),
            cpu_per_run_by_process_s={k: round((after[k] - before[k]) / n, 2) for k in PROCESSES},
            last_run_tasks={
                ti["task_id"] + ("" if ti["map_index"] < 0 else f"[{ti['map_index']}]"): ti["duration"]
                for ti in stack.task_instances(run_id)
            },
        )
        fig["tasks_started_per_run"] = sum(1 for d in fig["last_run_tasks"].values() if d is not None)
    finally:
        save(fig, OUT)
        manager.close()
    print(json.dumps(fig, indent=2))
    print(f"saved {OUT}")


if __name__ == "__main__":
    main()
