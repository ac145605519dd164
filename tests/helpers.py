"""Side-effect-free helpers shared by test modules (conftest.py sets up the environment once;
importing it again from a test would redo that setup)."""

from __future__ import annotations

from contextlib import contextmanager

# dag.test() keeps the params of the previous run on a shared DAG object: every conf is completed with these.
PARAM_DEFAULTS = {"batch_size": 500, "include_activities": False, "dry_run": False, "force_rerun": False}


def task_states(dag_run) -> dict[str, list[str]]:
    """{task_id: [state per map index]} of a finished run."""
    out: dict[str, list[str]] = {}
    for ti in sorted(dag_run.get_task_instances(), key=lambda t: (t.task_id, t.map_index)):
        out.setdefault(ti.task_id, []).append(str(ti.state))
    return out


def task_state(dag_run, task_id: str) -> str:
    """The state of one (unmapped) task instance of a finished run."""
    [ti] = [t for t in dag_run.get_task_instances() if t.task_id == task_id]
    return str(ti.state)


def set_run_state(run_id: str, state: str) -> None:
    """Set a DAG run's state in this session's metadata DB, as marking it in the UI does."""
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from sqlalchemy import update

    with create_session() as session:
        session.execute(update(DagRun).where(DagRun.run_id == run_id).values(state=state))


def assert_conserved(crm, cdp, cid: int, job_id: str) -> dict[str, dict[str, set[int]]]:
    """Conservation of one job: every source row of the CID is in exactly one of migrated, already
    migrated, skipped (by reason, NOT_A_PERSON_NOTE included) or failed (by reason), and the sets match
    the job's page counters. A halted run may leave rows `not_processed`, never inside a page it did.

    Returns {outcome: {reason or outcome: ids}} for further checks."""
    from collections import Counter

    from notes_migration.domain import config as C
    from notes_migration.domain.codes import Outcome, State

    job = cdp[C.JOBS].find_one({"_id": job_id})
    assert job is not None, f"job {job_id} not found"
    company = job["company_sso_id"]
    with crm.cursor() as cur:
        cur.execute("SELECT id, crm_person_id IS NOT NULL FROM crm_notes WHERE organization_id = %s", (cid,))
        source = dict(cur.fetchall())
    pages = list(cdp[C.PAGES].find({"job_id": job_id}))
    done_ranges = [(p["lo_id"], p["hi_id"]) for p in pages]
    log = list(cdp[C.NOTE_LOG].find({"job_id": job_id, "outcome": {"$in": [Outcome.FAILED, Outcome.SKIPPED]}}))
    failed: dict[str, set[int]] = {}
    skipped: dict[str, set[int]] = {"NOT_A_PERSON_NOTE": {i for i, person in source.items() if not person}}
    seen: Counter[int] = Counter()
    for e in log:
        target = failed if e["outcome"] == Outcome.FAILED else skipped
        target.setdefault(e["reason_code"], set()).add(e["legacy_crm_note_id"])
        seen[e["legacy_crm_note_id"]] += 1
    assert not [i for i, n in seen.items() if n > 1], "a note has two failure/skip outcomes"
    dry = job["config"]["dry_run"]
    migrated: set[int] = set()
    for audit in cdp[C.AUDIT].find({"job_id": job_id}):
        migrated.update(audit["legacy_crm_note_ids"])
    in_cdp = {
        d["legacy_crm_note_id"]
        for d in cdp[C.CONTACT_NOTES].find(
            {"company_sso_id": company, "legacy_crm_note_id": {"$in": sorted(source)}}, {"legacy_crm_note_id": 1}
        )
    }
    n_docs = cdp[C.CONTACT_NOTES].count_documents(
        {"company_sso_id": company, "legacy_crm_note_id": {"$in": sorted(source)}}
    )
    assert n_docs == len(in_cdp), "a legacy note has more than one CDP document"
    flagged = set().union(*failed.values(), *skipped.values())
    processed = {i for i in source if any(lo <= i <= hi for lo, hi in done_ranges) and source[i]}
    rest = processed - flagged - migrated
    already = rest & in_cdp  # a dry run predicts already_migrated the same way
    if dry:
        migrated, rest = rest - in_cdp, set()
    not_processed = set(source) - flagged - migrated - already
    assert not (rest - already), f"processed notes with no outcome: {sorted(rest - already)[:10]}"
    if job["state"] != State.HALTED:
        assert not not_processed, f"notes with no outcome: {sorted(not_processed)[:10]}"
    assert not (not_processed & processed)
    groups = [migrated, already, *failed.values(), *skipped.values(), not_processed]
    assert sum(len(g) for g in groups) == len(source), "the outcome sets overlap"
    assert set().union(*groups) == set(source)
    if not dry:
        assert migrated <= in_cdp, "a note counted migrated is not in CDP"
    sums: Counter[str] = Counter()
    failed_by: Counter[str] = Counter()
    skipped_by: Counter[str] = Counter()
    for p in pages:
        sums.update({k: p.get(k, 0) for k in ("migrated", "already_migrated", "failed", "skipped")})
        failed_by.update(p.get("failed_by_reason") or {})
        skipped_by.update(p.get("skipped_by_reason") or {})
    assert sums["migrated"] == len(migrated) and sums["already_migrated"] == len(already), (sums, len(migrated))
    assert dict(failed_by) == {r: len(ids) for r, ids in failed.items() if ids}
    assert dict(skipped_by) == {r: len(ids) for r, ids in skipped.items() if ids and r != "NOT_A_PERSON_NOTE"}
    from notes_migration.stores import job_store  # what the status counts without reading the whole log

    logged = {o: by for o, by in job_store.counts_by_outcome(cdp, job_id).items() if o in job_store.STATUS_OUTCOMES}
    assert job_store.status_counts(cdp, job_id, pages) == logged
    return {
        "migrated": {"migrated": migrated},
        "already_migrated": {"already_migrated": already},
        "failed": failed,
        "skipped": skipped,
        "not_processed": {"not_processed": not_processed},
    }


def assert_run_conserved(crm, cdp, dag_run) -> dict | None:
    """assert_conserved for the job a dag.test() run recorded (None: preconditions refused it, no job)."""
    from notes_migration.domain import config as C
    from notes_migration.domain.config import job_id_for

    cid = int(dag_run.conf["cid"])
    job_id = job_id_for(dag_run.run_id, cid)
    if cdp[C.JOBS].find_one({"_id": job_id}, {"_id": 1}) is None:
        return None
    return assert_conserved(crm, cdp, cid, job_id)


def run_migration(migration_dag, mp, conf: dict, *, crm, cdp, flag=None, settings=None, **test_kwargs):
    """dag.test() of the migration DAG with the flag and settings Variables set through `mp` (a MonkeyPatch),
    the conf completed with PARAM_DEFAULTS; then conservation of the job it recorded (assert_run_conserved).
    For fixtures wider than a test, which cannot use conftest's function-scoped `run_dag`."""
    import json

    mp.setenv("AIRFLOW_VAR_CRM_NOTES_MIGRATION_ENABLED", json.dumps(flag if flag is not None else [conf["cid"]]))
    mp.setenv("AIRFLOW_VAR_CRM_NOTES_MIGRATION_SETTINGS", json.dumps(settings or {}))
    dag_run = migration_dag.test(run_conf={**PARAM_DEFAULTS, **conf}, **test_kwargs)
    assert_run_conserved(crm, cdp, dag_run)  # every run: each source row in exactly one outcome
    return dag_run


@contextmanager
def ops_api_app(users: dict[str, tuple[str, str]], jwt_secret: str, passwords_file):
    """The Airflow API server app (core API, auth manager, plugins) as `airflow api-server` builds it, with the
    SimpleAuthManager and `users` ({name: (password, role)}); real JWTs come from its /auth/token."""
    import json

    import pytest

    passwords_file.write_text(json.dumps({user: pw for user, (pw, _role) in users.items()}))
    mp = pytest.MonkeyPatch()
    mp.setenv(
        "AIRFLOW__CORE__AUTH_MANAGER", "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
    )
    mp.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS", ",".join(f"{u}:{role}" for u, (_pw, role) in users.items()))
    mp.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE", str(passwords_file))
    mp.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS", "False")
    mp.setenv("AIRFLOW__API_AUTH__JWT_SECRET", jwt_secret)
    from airflow.api_fastapi.app import create_app, purge_cached_app

    purge_cached_app()
    try:
        yield create_app(apps="core")
    finally:
        purge_cached_app()
        mp.undo()


def bearer_token(client, user: str, password: str) -> str:
    """A real JWT of the API server's auth manager (POST /auth/token)."""
    resp = client.post("/auth/token", json={"username": user, "password": password})
    assert resp.status_code == 201, resp.text
    return resp.json()["access_token"]


def run_steps(crm, cdp, cfg, run_id: str, *, triggered_by: str = "ops") -> dict:
    """A whole run of the CID in-process, its steps as the DAG calls them (job, coverage, pages with their
    relinking, validation), the lock released; then conservation of the job. For fixtures that need a
    finished job without Airflow."""
    from notes_migration.run import batch, coverage, plan, relink, start, validate
    from notes_migration.stores import s3_store as s3

    job = start.start_job(crm, cdp, cfg, run_id=run_id, triggered_by=triggered_by, flag_cids=[cfg.cid])
    try:
        coverage.run_coverage(crm, cdp, job["job_id"])
        source, target = s3.bucket_for("crm_s3"), s3.bucket_for("cdp_s3")
        for page in plan.plan(crm, cdp, job["job_id"]):
            batch.migrate_page(crm, cdp, job["job_id"], page)
            relink.relink_page(crm, cdp, job["job_id"], page, source=source, target=target)
        validate.validate(crm, cdp, job["job_id"])
    finally:
        start.release(cdp, cfg.cid, run_id)
    assert_conserved(crm, cdp, cfg.cid, job["job_id"])
    return job


def point_connection(mp, conn_id: str, **changes) -> None:
    """Re-point one AIRFLOW_CONN_* (JSON form, as scripts/env.sh exports them) while the MonkeyPatch `mp` holds."""
    import json
    import os

    var = f"AIRFLOW_CONN_{conn_id.upper()}"
    conn = json.loads(os.environ[var])
    extra = changes.pop("extra", None)
    conn.update(changes)
    if extra:
        conn["extra"] = {**conn.get("extra", {}), **extra}
    mp.setenv(var, json.dumps(conn))
