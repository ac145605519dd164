"""Relink throughput against the local S3 server: the chosen concurrency next to a sequential run.

Measures the relinker's own copy path (`copy_engine.copy_files`: HEAD target, streamed
GET into a spool, content check, PUT with Content-MD5) on synthetic files placed in
the CRM bucket under `bench/relink/`, copied to a benchmark-only company prefix of
the CDP bucket. Both runs happen in the same process on the same files; the target
prefix is emptied before each run so both copy everything.

    python -m benchmarks.relink --files 200 --file-kb 256 --concurrency 8
"""

from __future__ import annotations

import argparse
import json
import os
import time
import uuid
from typing import Any

from notes_migration import s3_store as s3
from notes_migration.accounting import percentile
from notes_migration.attachment_plan import plan_note_files
from notes_migration.codes import AttachmentOutcome
from notes_migration.config import CDP_S3_CONN_ID, CRM_S3_CONN_ID, Thresholds
from notes_migration.copy_engine import copy_files, target_listing
from notes_migration.crm_source import FileRow

BENCH_COMPANY = str(uuid.uuid5(uuid.NAMESPACE_URL, "crm-notes-migration/relink-benchmark"))
SOURCE_PREFIX = "bench/relink/"
PRD_P95_FILE_SECONDS = 30.0


def _body(i: int, size: int) -> bytes:
    """JPEG-looking bytes of the requested size (incompressible, so the transfer is real)."""
    head = b"\xff\xd8\xff\xe0" + i.to_bytes(4, "big")
    return head + os.urandom(max(0, size - len(head)))


def _run(plans, source: s3.Bucket, target: s3.Bucket, *, concurrency: int, cap: int) -> dict[str, Any]:
    s3.delete_prefix(target, f"{BENCH_COMPANY}/")
    started = time.perf_counter()
    known = target_listing(target, BENCH_COMPANY, sorted({p.row.note_id for p in plans}))  # as relink_page does
    results = copy_files(plans, source, target, cap_bytes=cap, concurrency=concurrency, known=known)
    wall = time.perf_counter() - started
    copied = [r for r in results.values() if r.outcome == AttachmentOutcome.RELINKED and r.copied]
    nbytes = sum(r.size or 0 for r in copied)
    per_file = [r.seconds for r in results.values()]
    return {
        "concurrency": concurrency,
        "files": len(plans),
        "copied": len(copied),
        "not_copied": len(plans) - len(copied),
        "seconds": round(wall, 3),
        "files_per_s": round(len(copied) / wall, 2) if wall else None,
        "mb_per_s": round(nbytes / 1e6 / wall, 2) if wall else None,
        "p50_file_s": round(percentile(per_file, 50) or 0, 4),
        "p95_file_s": round(percentile(per_file, 95) or 0, 4),
        "max_file_s": round(max(per_file, default=0), 4),
    }


def benchmark_relink(
    *,
    files: int = 200,
    file_bytes: int = 256 * 1024,
    concurrency: int | None = None,
    large_files: int = 2,
    large_bytes: int = 12 * 1024 * 1024,
    source_conn_id: str = CRM_S3_CONN_ID,
    target_conn_id: str = CDP_S3_CONN_ID,
    keep: bool = False,
) -> dict[str, Any]:
    """files/s, MB/s and per-file P50/P95 of relinking `files` objects of `file_bytes` (plus `large_files`
    multipart-sized ones), sequentially (concurrency 1) and with `concurrency` (default: Thresholds'
    attachment_concurrency). Returns {"sequential": {...}, "concurrent": {...}, "speedup": x, ...}."""
    workers = concurrency or Thresholds().attachment_concurrency
    cap = Thresholds().attachment_size_cap_bytes
    source = s3.bucket_for(source_conn_id, concurrency=workers)
    target = s3.bucket_for(target_conn_id, concurrency=workers)
    s3.ensure_bucket(source)
    s3.ensure_bucket(target)
    rows = []
    for i in range(files + large_files):
        size = large_bytes if i >= files else file_bytes
        key = f"{SOURCE_PREFIX}{i}/photo-{i}.jpg"
        s3.put(source, key, _body(i, size), "image/jpeg")
        rows.append(
            FileRow(
                "asset", 1_000_000 + i, 900_000 + i // 2, "Crm::NoteImage", f"photo {i}.jpg", "image/jpeg", size, key
            )
        )
    plans = [
        p
        for nid in sorted({r.note_id for r in rows})
        for p in plan_note_files(BENCH_COMPANY, nid, [r for r in rows if r.note_id == nid], cap_bytes=cap)
    ]
    try:
        sequential = _run(plans, source, target, concurrency=1, cap=cap)
        concurrent = _run(plans, source, target, concurrency=workers, cap=cap)
    finally:
        if not keep:
            s3.delete_prefix(target, f"{BENCH_COMPANY}/")
            s3.delete_prefix(source, SOURCE_PREFIX)
    speedup = (concurrent["files_per_s"] / sequential["files_per_s"]) if sequential["files_per_s"] else None
    return {
        "files": files,
        "file_bytes": file_bytes,
        "large_files": large_files,
        "large_bytes": large_bytes,
        "sequential": sequential,
        "concurrent": concurrent,
        "speedup": round(speedup, 2) if speedup else None,
        "p95_file_s": concurrent["p95_file_s"],
        "prd_p95_file_s": PRD_P95_FILE_SECONDS,
        "meets_prd_p95": concurrent["p95_file_s"] <= PRD_P95_FILE_SECONDS,
    }


def format_figures(figures: dict[str, Any]) -> str:
    lines = [
        f"relink benchmark: {figures['files']} files × {figures['file_bytes'] // 1024} KiB"
        f" + {figures['large_files']} × {figures['large_bytes'] // (1024 * 1024)} MiB"
    ]
    for label in ("sequential", "concurrent"):
        r = figures[label]
        lines.append(
            f"  {label:<10} c={r['concurrency']:<3} {r['files_per_s']:>8} files/s {r['mb_per_s']:>8} MB/s"
            f"  p50 {r['p50_file_s']:.3f}s  p95 {r['p95_file_s']:.3f}s  max {r['max_file_s']:.3f}s"
            f"  ({r['copied']}/{r['files']} copied in {r['seconds']}s)"
        )
    lines.append(
        f"  speedup ×{figures['speedup']}; P95 per file {figures['p95_file_s']}s (PRD ≤ {figures['prd_p95_file_s']}s)"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=200)
    parser.add_argument("--file-kb", type=int, default=256)
    parser.add_argument("--concurrency", type=int, default=None)
    parser.add_argument("--large-files", type=int, default=2)
    parser.add_argument("--large-mb", type=int, default=12)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    figures = benchmark_relink(
        files=args.files,
        file_bytes=args.file_kb * 1024,
        concurrency=args.concurrency,
        large_files=args.large_files,
        large_bytes=args.large_mb * 1024 * 1024,
    )
    print(json.dumps(figures, indent=2) if args.json else format_figures(figures))


if __name__ == "__main__":
    main()
