"""Benchmark (not a test): a 130-CID fleet through the rollout DAG under a real scheduler.

From one run: the fleet seeded afresh on the shared servers (CIDs 8200–8329, ~21,000 notes in all with a
realistic spread: most CIDs small, a few large, one of 5,000; no files: the note path and the rollout's
machinery are measured, benchmarks.relink measures the copy engine), a private stack (`scripts/airflow.sh
up` through devtools.stack.StackManager: free loopback ports, fresh metadata DB, LocalExecutor, CDP database `cdp_bench`), the
flag on for every CID, one `crm_notes_rollout` run with `max_concurrent` lanes triggered through Airflow's
REST API. Figures: the fleet's wall time (trigger to the rollout run's end), per-CID run durations (p50, p95;
each migration run's start to end in Airflow's REST API), the ratio of the fleet's wall time to the sum of
its CIDs' run durations, where a CID's run spends its time (tasks per run, task time, the gaps between
tasks: scheduling and task start-up), and the machine's busy CPU seconds over the fleet (per CID). Target: the whole fleet in ≤ 10 minutes on this 2-core machine.

The rollout runs in stage `batch` (one CSM approval per CID, PRD §15): the benchmark waits until Airflow asks
all 130 (each request carries the CID's preflight and dry-run figures) and approves them all through the REST
API up front (`PATCH …/taskInstances/approve_cid/{map_index}/hitlDetails`, an open window). Figures split the
wall time into the approval phase (trigger → every request answered) and the migration phase (the answers →
the rollout run's end). Lanes wait deferred, so they hold no executor slot: `[core] parallelism` is the stack's
default.

    python -m benchmarks.fleet [--max-concurrent 4] [--batch-size 500] [--stage batch|qa] [--no-seed] [--timeout 3600]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import random
import signal
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from devtools.cdp_db import BENCH_DATABASE
from devtools.seed import SeedSpec, company_for, seed
from devtools.stack import ROOT, StackManager, wait_until
from notes_migration.stores.connections import cdp_database, crm_connection

FIRST_CID, FLEET_SIZE = 8200, 130
TARGET_S = 600.0
OUT = ROOT / ".build" / "benchmark_fleet.json"
ROLLOUT_DAG_ID, MIGRATION_DAG_ID = "crm_notes_rollout", "crm_notes_migration"
CLEAN: dict[str, Any] = {  # no files, nothing that fails a note: every CID completes (a halt would trip the gate)
    "image_share": 0.0,
    "audio_share": 0.0,
    "document_share": 0.0,
    "unsupported_file_share": 0.0,
    "upload_files": False,
    "ambiguous_contact_share": 0.0,
}


def fleet_sizes() -> dict[int, int]:
    """130 CIDs, ~21,000 notes: one of 5,000, four large (1,200–1,800), ten medium (250–550), the rest small
    (10–150, most under 80). Deterministic."""
    rng = random.Random(FIRST_CID)
    sizes = [5000] + [rng.randint(1200, 1800) for _ in range(4)] + [rng.randint(250, 550) for _ in range(10)]
    small = FLEET_SIZE - len(sizes)
    sizes += [min(150, max(10, int(rng.lognormvariate(4.0, 0.55)))) for _ in range(small)]
    rng.shuffle(sizes)  # big CIDs anywhere in the list, as a real wave would be ordered (by CID)
    return {FIRST_CID + n: size for n, size in enumerate(sizes)}


def seed_fleet(sizes: dict[int, int]) -> float:
    db = cdp_database()
    t = time.perf_counter()
    with crm_connection(read_only=False) as rw:
        for cid, notes in sizes.items():
            seed(SeedSpec(cid=cid, notes=notes, **CLEAN), rw, db)  # reseeds: its CDP notes and bookkeeping wiped
        rw.commit()
    return time.perf_counter() - t


def when(value: str | None) -> dt.datetime | None:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


def pct(values: list[float], q: float) -> float:
    xs = sorted(values)
    return round(xs[min(len(xs) - 1, max(0, round(q * (len(xs) - 1))))], 1) if xs else 0.0


def api_list(client, path: str, key: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    while True:
        resp = client.get(path, params={"limit": 100, "offset": len(out)})
        assert resp.status_code == 200, resp.text
        page = resp.json()[key]
        out += page
        if len(page) < 100:
            return out


def run_breakdown(client, run: dict[str, Any]) -> dict[str, Any]:
    """Where one migration run's time goes: its tasks' own time and the gaps (scheduling, task start-up)."""
    tis = api_list(
        client, f"/api/v2/dags/{MIGRATION_DAG_ID}/dagRuns/{run['dag_run_id']}/taskInstances", "task_instances"
    )
    # a task skipped by the scheduler or the Execution API (a branch, a whole-CID page's relink) has dates but no
    # duration: it never started on a worker
    ran = [t for t in tis if t.get("start_date") and t.get("end_date") and t.get("duration") is not None]
    busy = sum(float(t.get("duration") or 0) for t in ran)
    waits = [(when(t["start_date"]) - when(t["queued_when"])).total_seconds() for t in ran if t.get("queued_when")]  # type: ignore[operator]
    start, end = when(run["start_date"]), when(run["end_date"])
    wall = (end - start).total_seconds() if start and end else None
    return {
        "tasks": len(ran),
        "skipped_unstarted": sum(1 for t in tis if t.get("duration") is None and t.get("state") == "skipped"),
        "task_time_s": round(busy, 1),
        "wall_s": round(wall, 1) if wall is not None else None,
        # the run's seconds with none of its tasks running (scheduling, task start-up), for a run whose tasks
        # run one after another (a small CID's; a larger one's pages overlap and make this an underestimate)
        "gap_s": round(wall - busy, 1) if wall is not None else None,
        "mean_queued_to_start_s": round(statistics.mean(waits), 2) if waits else None,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--no-seed", action="store_true", help="the fleet is already seeded and never migrated")
    parser.add_argument("--max-concurrent", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--poke-interval", type=int, default=2)
    parser.add_argument(
        "--stage", choices=["batch", "pilot", "qa"], default="batch", help="batch: approve all up front"
    )
    parser.add_argument("--timeout", type=float, default=3600, help="seconds for the whole fleet")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stopped (kill): the stack is still taken down
    sizes = fleet_sizes()
    cids = list(sizes)
    fig: dict[str, Any] = {
        "cids": len(cids),
        "cid_range": [cids[0], cids[-1]],
        "notes_total": sum(sizes.values()),
        "size_spread": {
            "max": max(sizes.values()),
            "p50": statistics.median(sizes.values()),
            "over_1000": sum(1 for s in sizes.values() if s > 1000),
            "under_100": sum(1 for s in sizes.values() if s < 100),
        },
        "max_concurrent": args.max_concurrent,
        "batch_size": args.batch_size,
        "target_s": TARGET_S,
    }
    if not args.no_seed:
        fig["seed_s"] = round(seed_fleet(sizes), 1)
    save(fig, args.out)
    manager = StackManager(cdp_database=BENCH_DATABASE)
    try:
        t = time.monotonic()
        stack = manager.get("local")
        fig["stack_up_s"] = round(time.monotonic() - t, 1)
        stack.set_flag(cids)
        conf = {
            "cids": [{"cid": c, "company_sso_id": company_for(c)} for c in cids],
            "max_concurrent": args.max_concurrent,
            "halt_gate": 0.02,
            "batch_size": args.batch_size,
            "poke_interval": args.poke_interval,
            "stage": args.stage,
        }
        t0, busy0 = time.monotonic(), cpu_busy_s()
        with stack.client("ops") as c:
            resp = c.post(f"/api/v2/dags/{ROLLOUT_DAG_ID}/dagRuns", json={"logical_date": None, "conf": conf})
        assert resp.status_code == 200, resp.text
        run_id = resp.json()["dag_run_id"]
        if args.stage != "qa":
            fig["approvals"] = approve_all(stack, run_id, len(cids), args.timeout)
            fig["approvals"]["answered_after_s"] = round(time.monotonic() - t0, 1)
        answered = time.monotonic()

        def ended() -> tuple[bool, Any]:
            with stack.client("admin") as c:
                state = c.get(f"/api/v2/dags/{ROLLOUT_DAG_ID}/dagRuns/{run_id}").json()["state"]
            return state in ("success", "failed"), state

        fig["rollout_run_state"] = wait_until(f"rollout {run_id} to end", args.timeout, ended, 5)
        wall = time.monotonic() - t0
        fig["fleet_wall_s"] = round(wall, 1)
        busy = cpu_busy_s() - busy0  # the whole machine: every Airflow process, the servers, this script
        fig["cpu"] = {
            "busy_s": round(busy, 1),
            "per_cid_s": round(busy / len(cids), 2),
            "cores_busy": round(busy / wall, 2),
        }
        fig["migration_phase_s"] = round(time.monotonic() - answered, 1)
        fig["target_met"] = wall <= TARGET_S
        from notes_migration.ops.rollout import rollout_id_for

        rid = rollout_id_for(run_id)
        with stack.client("ops") as c:
            report = c.get(f"/crm-notes-migration/api/rollouts/{rid}").json()
        fig["rollout"] = {"rollout_id": rid, "state": report.get("state"), "totals": report.get("totals")}
        with stack.client("admin") as c:
            runs = [
                r
                for r in api_list(c, f"/api/v2/dags/{MIGRATION_DAG_ID}/dagRuns", "dag_runs")
                if r["dag_run_id"].startswith(f"{rid}__")
            ]
            parts = {r["dag_run_id"]: run_breakdown(c, r) for r in runs}
        durations = [p["wall_s"] for p in parts.values() if p["wall_s"] is not None]
        by_cid = {int(k.rsplit("_", 1)[1]): v for k, v in parts.items()}
        fig["per_cid_run_s"] = {"p50": pct(durations, 0.5), "p95": pct(durations, 0.95), "max": max(durations)}
        fig["sum_of_cid_runs_s"] = round(sum(durations), 1)
        fig["ratio_fleet_wall_to_sum_of_runs"] = round(wall / sum(durations), 3) if durations else None
        tasks = [p["tasks"] for p in parts.values()]
        busy = [p["task_time_s"] for p in parts.values()]
        small = [p for c, p in by_cid.items() if sizes[c] < 100 and p["wall_s"]]
        fig["breakdown"] = {
            "runs": len(parts),
            "mean_tasks_per_run": round(statistics.mean(tasks), 1) if tasks else None,
            "mean_task_time_per_run_s": round(statistics.mean(busy), 1) if busy else None,
            "mean_queued_to_start_s": round(
                statistics.mean(p["mean_queued_to_start_s"] for p in parts.values() if p["mean_queued_to_start_s"]), 2
            )
            if parts
            else None,
            "small_cids_mean_run_s": round(statistics.mean(p["wall_s"] for p in small), 1) if small else None,
            "small_cids_mean_task_time_s": round(statistics.mean(p["task_time_s"] for p in small), 1)
            if small
            else None,
            "small_cids_mean_tasks": round(statistics.mean(p["tasks"] for p in small), 1) if small else None,
            "small_cids_mean_gap_s": round(statistics.mean(p["gap_s"] for p in small), 1) if small else None,
            "biggest_cid_run_s": by_cid.get(max(sizes, key=lambda c: sizes[c]), {}).get("wall_s"),
        }
        fig["runs"] = {str(c): {"notes": sizes[c], **p} for c, p in sorted(by_cid.items())}
    finally:
        save(fig, args.out)
        manager.close()
    save(fig, args.out)
    print(json.dumps({k: v for k, v in fig.items() if k != "runs"}, indent=2, default=str))
    print(f"saved {args.out}")


def approve_all(stack: Any, run_id: str, count: int, timeout: float) -> dict[str, Any]:
    """Wait until the rollout asks its `count` approvals, then approve each through the REST API (a window
    open now, for 4 hours): what a CSM team does up front for a wave."""
    path = f"/api/v2/dags/{ROLLOUT_DAG_ID}/dagRuns/{run_id}/taskInstances"
    t = time.monotonic()

    def asked() -> tuple[bool, Any]:
        with stack.client("admin") as c:
            tis = api_list(c, f"{path}/approve_cid/listMapped", "task_instances")
        waiting = [t["map_index"] for t in tis if t["state"] == "awaiting_input"]
        return len(waiting) == count, waiting

    indexes = wait_until(f"{count} approval requests", timeout, asked, 5)
    asked_s = time.monotonic() - t
    now = dt.datetime.now(dt.UTC)
    window = {
        "window_start": (now - dt.timedelta(minutes=1)).isoformat().replace("+00:00", "Z"),
        "window_end": (now + dt.timedelta(hours=4)).isoformat().replace("+00:00", "Z"),
        "reference": "FLEET-BENCH",
    }
    with stack.client("ops") as c:
        for index in indexes:
            resp = c.patch(
                f"{path}/approve_cid/{index}/hitlDetails", json={"chosen_options": ["Approve"], "params_input": window}
            )
            assert resp.status_code == 200, resp.text
    return {"asked": len(indexes), "all_asked_after_s": round(asked_s, 1)}


def cpu_busy_s() -> float:
    """CPU seconds the machine spent busy so far (user + nice + system, all cores: /proc/stat)."""
    import psutil

    t = psutil.cpu_times()
    return t.user + t.nice + t.system


def save(fig: dict[str, Any], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(fig, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
