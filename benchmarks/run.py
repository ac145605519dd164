"""All benchmark figures from one run: the page path (benchmarks.page_path) and relinking (benchmarks.relink).

Prints the JSON, then a readable table, and saves the JSON as .build/benchmark-<UTC stamp>.json
(and .build/benchmark-latest.json). Figures, not pass/fail: no test reads them.

    scripts/benchmark.sh [--no-seed] [--rounds N]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
from pathlib import Path
from typing import Any

from benchmarks.page_path import benchmark_page_path
from benchmarks.relink import benchmark_relink

ROOT = Path(__file__).resolve().parents[1]


def _mib(kib: int) -> str:
    return f"{kib / 1024:.1f} MiB"


def rows(fig: dict[str, Any]) -> list[tuple[str, str]]:
    p, r = fig["page_path"], fig["relink"]
    mem = p["memory"]
    small, large = mem["small"], mem["large"]
    rows = [
        (
            "page path (extract+transform+decide+re-check+insert+bookkeeping)",
            f"{p['page_path_notes_per_s']:,.0f} notes/s",
        ),
        ("raw ceiling: bare insert_many, same docs, same collection", f"{p['raw_insert_notes_per_s']:,.0f} notes/s"),
        ("raw extract query", f"{p['raw_extract_rows_per_s']:,.0f} rows/s"),
        (
            "ratio page path / raw insert (target ≥ 0.5)",
            f"{p['ratio_page_path_to_raw_insert']} ({'met' if p['ratio_page_path_to_raw_insert'] >= 0.5 else 'NOT met'})",
        ),
        (
            "page path, 4 page tasks at once (processes, as the DAG runs them) / raw insert",
            f"{p['page_path_4_processes_notes_per_s']:,.0f} notes/s = {p['ratio_page_path_4_processes_to_raw_insert']}",
        ),
        ("page path rounds / raw insert rounds", f"{p['page_path_all_rounds']} / {p['raw_insert_all_rounds']}"),
        ("page path phases, s (10 pages)", ", ".join(f"{k} {v}" for k, v in p["page_path_phase_seconds"].items())),
        ("raw insert of the same docs, s", f"{p['raw_insert_seconds']}"),
        (
            "naive: insert_one per note, same transform",
            f"{p['naive_notes_per_s']:,.0f} notes/s = {p['ratio_naive_to_page_path']} × page path",
        ),
        ("bare transform per row", f"{p['bare_transform_ms_per_row']} ms"),
        (
            "P95 page / P95 batch insert (page path, raw)",
            f"{p['p95_page_s']} s / {p['p95_batch_insert_s_page_path']} s, {p['p95_batch_insert_s_raw']} s",
        ),
        ("page task peak RSS, 5,000-note CID", _mib(small["page_task"]["vm_hwm_kib"])),
        ("page task peak RSS, 100,000-note CID", _mib(large["page_task"]["vm_hwm_kib"])),
        (
            "ratio large / small (target ≤ 1.2)",
            f"{mem['page_task_hwm_ratio_large_to_small']} (process baseline {_mib(mem['baseline_process']['vm_hwm_kib'])})",
        ),
        (
            "coverage + plan, 5,000 notes: time, peak RSS",
            f"{small['coverage_and_plan']['seconds']} s, {_mib(small['coverage_and_plan']['vm_hwm_kib'])}",
        ),
        (
            "coverage + plan, 100,000 notes: time, peak RSS",
            f"{large['coverage_and_plan']['seconds']} s, {_mib(large['coverage_and_plan']['vm_hwm_kib'])}"
            f" ({large['pages_total']} batches)",
        ),
    ]
    for run in r["runs"]:
        rows.append(
            (
                f"relink c={run['concurrency']}",
                f"{run['files_per_s']} files/s, {run['mb_per_s']} MB/s, ×{run['speedup']}, p95 {run['p95_file_s']} s,"
                f" server {run['server_cpu_share_of_one_core']} core ({run['server_cpu_ms_per_file']} ms/file),"
                f" client {run['client_cpu_ms_per_file']} ms/file",
            )
        )
    rows.append(
        (
            "relink speedup at 8 (target ≥ 3)",
            f"×{r['speedup_at_8']}; CPU bound on {r['cores']} cores ≈ {r['cpu_bound_files_per_s']} files/s",
        )
    )
    rows.extend(_bound_rows("local S3 (moto)", r))
    other = fig.get("relink_second_server")
    if other:
        for run in other["runs"]:
            rows.append(
                (
                    f"relink c={run['concurrency']}, second server {other['endpoint']}",
                    f"{run['files_per_s']} files/s, ×{run['speedup']},"
                    f" server {run['server_cpu_share_of_one_core']} core ({run['server_cpu_ms_per_file']} ms/file)",
                )
            )
        rows.extend(_bound_rows("second server", other))
    return rows


def _bound_rows(label: str, r: dict[str, Any]) -> list[tuple[str, str]]:
    if r.get("speedup_bound_single_process_server") is None:
        return []
    return [
        (
            f"relink speedup bound, {label}",
            f"c=1 wall {r['sequential_wall_ms_per_file']} ms/file, {r['sequential_cpu_share_of_wall']} of it CPU:"
            f" ≤ ×{r['speedup_bound_single_process_server']} with a one-core server,"
            f" ≤ ×{r['speedup_bound_cores']} on {r['cores']} cores",
        )
    ]


def table(fig: dict[str, Any]) -> str:
    pairs = rows(fig)
    width = max(len(k) for k, _ in pairs)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in pairs)


README_START, README_END = "<!-- benchmark:start -->", "<!-- benchmark:end -->"


def regenerate_readme(fig: dict[str, Any], readme: Path = ROOT / "benchmarks" / "RESULTS.md") -> None:
    """Replace the in-process table of benchmarks/RESULTS.md (between the benchmark markers) with this run's figures."""
    text = readme.read_text()
    head, _, rest = text.partition(README_START)
    _, _, tail = rest.partition(README_END)
    if not rest or not tail and README_END not in rest:
        raise SystemExit(f"{readme.name} has no {README_START} … {README_END} block")
    lines = [
        f"Run of {fig['started_at'][:16].replace('T', ' ')} UTC, {fig['machine']['cores']} cores, "
        f"{fig['seconds_total']} s:",
        "",
        "| figure | value |",
        "|---|---|",
    ]
    lines += [f"| {k} | {v.replace('|', '/')} |" for k, v in rows(fig)]
    readme.write_text(head + README_START + "\n" + "\n".join(lines) + "\n" + README_END + tail)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--no-seed", action="store_true")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument(
        "--second-s3",
        metavar="URL",
        help="also measure relinking against a second S3-compatible server (benchmarks/second_s3.sh up prints it)",
    )
    parser.add_argument(
        "--readme",
        metavar="JSON",
        nargs="?",
        const=str(ROOT / ".build" / "benchmark-latest.json"),
        help="only regenerate the table of benchmarks/RESULTS.md from a saved run (default: the latest)",
    )
    args = parser.parse_args(argv)
    if args.readme:
        regenerate_readme(json.loads(Path(args.readme).read_text()))
        print(f"benchmarks/RESULTS.md table regenerated from {args.readme}")
        return
    started = dt.datetime.now(dt.UTC)
    figures = {
        "started_at": started.isoformat(),
        "machine": {"cores": os.cpu_count(), "python": platform.python_version()},
        "page_path": benchmark_page_path(batch_size=args.batch_size, rounds=args.rounds, seed_first=not args.no_seed),
        "relink": benchmark_relink(),
    }
    if args.second_s3:
        figures["relink_second_server"] = benchmark_relink(endpoint=args.second_s3)
    figures["seconds_total"] = round((dt.datetime.now(dt.UTC) - started).total_seconds(), 1)
    out = ROOT / ".build"
    out.mkdir(exist_ok=True)
    text = json.dumps(figures, indent=2, default=str)
    path = out / f"benchmark-{started.strftime('%Y%m%dT%H%M%SZ')}.json"
    path.write_text(text)
    (out / "benchmark-latest.json").write_text(text)
    print(text)
    print()
    print(table(figures))
    print(f"\nsaved {path.relative_to(ROOT)} ({figures['seconds_total']} s)")


if __name__ == "__main__":
    main()
