"""Tenant isolation of two CIDs migrated at the same time, and no secret anywhere a run writes or logs.

CIDs used here: 6010–6029.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from devtools.seed import SeedSpec
from devtools.tcp_proxy import TcpProxy
from notes_migration.domain import config as C
from notes_migration.domain.config import RunConfig, job_id_for
from notes_migration.ops import queries as ops
from notes_migration.stores import connections, job_store
from notes_migration.stores import s3_store as s3
from tests.helpers import PARAM_DEFAULTS, assert_conserved, run_steps, task_states

# --------------------------------------------------------------------------- tenant isolation


def _run_steps(spec: SeedSpec, run_id: str) -> str:
    """One whole run through the steps the DAG's tasks call (threads cannot share one dag.test())."""
    cfg = RunConfig(cid=spec.cid, company_sso_id=spec.company_sso_id, batch_size=40)
    with connections.crm_session() as crm:
        job = run_steps(crm, connections.cdp_database(), cfg, run_id, triggered_by="isolation-test")
    return job["job_id"]


def _walk(value, out_str: set[str], out_int: set[int]) -> None:
    if isinstance(value, dict):
        for v in value.values():
            _walk(v, out_str, out_int)
    elif isinstance(value, list | tuple):
        for v in value:
            _walk(v, out_str, out_int)
    elif isinstance(value, bool):
        return
    elif isinstance(value, int):
        out_int.add(value)
    elif value is not None:
        out_str.add(str(value))


def test_two_companies_migrated_at_once_stay_in_their_own_scope(seed_cid, crm, cdp):
    specs = [SeedSpec(cid=6010, notes=160), SeedSpec(cid=6011, notes=160)]
    for spec in specs:
        seed_cid(spec)
    with ThreadPoolExecutor(max_workers=2) as pool:
        job_ids = list(pool.map(lambda s: _run_steps(s, f"isolation__{s.cid}"), specs))

    scope = {}
    for spec, job_id in zip(specs, job_ids, strict=True):
        with crm.cursor() as cur:
            cur.execute("SELECT id FROM crm_notes WHERE organization_id = %s", (spec.cid,))
            notes = {r[0] for r in cur.fetchall()}
        contacts = {d["_id"] for d in cdp[C.CONTACTS].find({"company_sso_id": spec.company_sso_id}, {"_id": 1})}
        owners = {d["_id"] for d in cdp[C.LAUNCHPAD_USERS].find({"company_sso_id": spec.company_sso_id}, {"_id": 1})}
        scope[spec.cid] = {
            "strings": {spec.company_sso_id, job_id, *map(str, contacts), *map(str, owners)},
            "ints": notes | {spec.cid},
            "keys": (spec.company_sso_id, job_id),
        }
        assert job_store.get_job(cdp, job_id)["state"] == "completed_success"
        assert_conserved(crm, cdp, spec.cid, job_id)

    checked = {6010: 0, 6011: 0}
    for name in cdp.list_collection_names():
        for doc in cdp[name].find({}).batch_size(100):  # FerretDB v1 may exceed the 48 MB reply cap otherwise
            strings: set[str] = set()
            ints: set[int] = set()
            _walk(doc, strings, ints)
            text = " ".join(strings)
            owners_of_doc = [
                cid
                for cid, s in scope.items()
                if doc.get("cid") == cid
                or doc.get("company_sso_id") == s["keys"][0]
                or doc.get("job_id") == s["keys"][1]
                or str(doc.get("_id", "")).startswith(s["keys"][1])
                or (name == C.LOCKS and doc.get("_id") == cid)
            ]
            if not owners_of_doc:
                continue
            assert len(owners_of_doc) == 1, (name, doc.get("_id"), owners_of_doc)
            mine = owners_of_doc[0]
            other = scope[6011 if mine == 6010 else 6010]
            checked[mine] += 1
            leaked = [s for s in other["strings"] if s in text]
            assert not leaked, f"{name} {doc.get('_id')} of CID {mine} names the other tenant: {leaked[:3]}"
            assert not (ints & other["ints"]), (
                f"{name} {doc.get('_id')} of CID {mine}: {sorted(ints & other['ints'])[:3]}"
            )
    assert checked[6010] > 100 and checked[6011] > 100, checked
    for collection in (C.CONTACT_NOTES, C.NOTE_LOG, C.EVENTS, C.AUDIT, C.PAGES, C.JOBS, C.ATTACHMENT_PAGES):
        assert cdp[collection].count_documents({"cid": 6010}) or collection == C.CONTACT_NOTES
    # the bucket: every object under a company's prefix belongs to one of that company's notes
    target = s3.bucket_for(C.CDP_S3_CONN_ID)
    for spec in specs:
        objects = s3.list_objects(target, f"{spec.company_sso_id}/") or {}
        assert objects
        for key in objects:
            note_id = int(key.split("/")[2])
            assert note_id in scope[spec.cid]["ints"], key
        notes = cdp[C.CONTACT_NOTES].find(
            {"company_sso_id": spec.company_sso_id, "legacy_crm_note_id": {"$exists": True}}
        )
        for n in notes:
            for a in n["attachments"]:
                if "url" in a:
                    assert f"/{spec.company_sso_id}/notes/{n['legacy_crm_note_id']}/" in a["url"], a["url"]


# --------------------------------------------------------------------------- secrets


SECRETS = {
    "pg": "pgSECRETx6020q",
    "mongo": "mongoSECRETx6020q",
    "s3_key": "AKIAS3CRETx6020Q",
    "s3": "s3SECRETx6020q",
    "slack": "slackSECRETx6020q",
    "pd": "pdSECRETx6020q",
}


def _secret_connections(monkeypatch, crm_port: int) -> None:
    def patch(conn_id: str, **changes) -> None:
        var = f"AIRFLOW_CONN_{conn_id.upper()}"
        conn = json.loads(os.environ[var])
        extra = changes.pop("extra", {})
        conn.update(changes)
        conn["extra"] = {**conn.get("extra", {}), **extra}
        monkeypatch.setenv(var, json.dumps(conn))

    patch(C.CRM_POSTGRES_CONN_ID, port=crm_port, password=SECRETS["pg"])  # trust auth: any password works
    # FerretDB accepts PLAIN (it hands the credentials to PostgreSQL, which trusts loopback)
    patch(
        C.CDP_MONGO_CONN_ID,
        login="postgres",
        password=SECRETS["mongo"],
        extra={"authMechanism": "PLAIN", "authSource": "$external"},
    )
    for conn_id in (C.CRM_S3_CONN_ID, C.CDP_S3_CONN_ID):
        patch(conn_id, login=SECRETS["s3_key"], password=SECRETS["s3"])
    patch(C.SLACK_CONN_ID, password=f"http://127.0.0.1:9/services/{SECRETS['slack']}")
    patch(C.PAGERDUTY_CONN_ID, password=SECRETS["pd"])
    connections._mongo_client.cache_clear()


def _xcoms(run_ids: list[str]) -> list[str]:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        rows = session.query(XComModel).filter(XComModel.run_id.in_(run_ids)).all()
        return [f"{r.task_id} {r.key} {r.value}" for r in rows]


def test_no_secret_in_logs_xcom_events_jobs_status_or_error_csv(
    seed_cid, crm, cdp, run_dag, monkeypatch, caplog, capsys
):
    from notes_migration.run import batch as mig

    proxy = TcpProxy(int(os.environ.get("CRM_PG_PORT", 54329))).start()
    try:
        _secret_connections(monkeypatch, proxy.port)
        ok, halt, refused = (SeedSpec(cid=6020, notes=80), SeedSpec(cid=6021, notes=120), SeedSpec(cid=6022, notes=10))
        for spec in (ok, halt, refused):
            seed_cid(spec)
        runs = []
        conf = lambda s, **kw: {**PARAM_DEFAULTS, "cid": s.cid, "company_sso_id": s.company_sso_id, **kw}  # noqa: E731
        # succeeds; attachment failures make the Slack alert try (and fail) to post to a URL holding a secret
        runs.append(run_dag(conf(ok), settings={"attachment_alert_share": 0.0}))
        assert str(runs[-1].state) == "success" or task_states(runs[-1])["finalise"] == ["success"]
        # halts: the CRM goes away after the first page (CRM_EXTRACT_FAILED, driver errors in the logs)
        real = mig.migrate_page

        def then_crm_stops(*a, **kw):
            out = real(*a, **kw)
            proxy.stop()
            return out

        monkeypatch.setattr(mig, "migrate_page", then_crm_stops)
        runs.append(run_dag(conf(halt, batch_size=50), settings={"crm_retry_backoff_seconds": 0.05}))
        monkeypatch.setattr(mig, "migrate_page", real)
        assert ops.cid_status(cdp, halt.cid)["halted_reason"] == "CRM_EXTRACT_FAILED"
        # fails: refused (flag off), and a run whose CRM is down before it starts
        runs.append(run_dag(conf(refused), flag=[1]))
        runs.append(run_dag(conf(refused), settings={"crm_retry_backoff_seconds": 0.05}))
        assert all(task_states(r)["preconditions"] == ["failed"] for r in runs[2:])
    finally:
        proxy.stop()
        connections._mongo_client.cache_clear()

    haystacks = {"logs": caplog.text + capsys.readouterr().out, "xcom": "\n".join(_xcoms([r.run_id for r in runs]))}
    home = Path(os.environ["AIRFLOW_HOME"]) / "logs"
    if home.exists():
        haystacks["task log files"] = "\n".join(p.read_text(errors="replace") for p in home.rglob("*") if p.is_file())
    docs = []
    for spec in (ok, halt, refused):
        jobs = list(cdp[C.JOBS].find({"cid": spec.cid}))
        docs.extend(jobs)
        for name in (C.EVENTS, C.NOTE_LOG, C.PAGES, C.AUDIT, C.ATTACHMENT_PAGES, C.LOCKS):
            docs.extend(cdp[name].find({"cid": spec.cid}))
        haystacks[f"status {spec.cid}"] = json.dumps(ops.cid_status(cdp, spec.cid), default=str)
        for job in jobs:
            docs.extend(cdp[C.PERSON_MAPS].find({"job_id": job["_id"]}))
            haystacks[f"error csv {job['_id']}"] = ops.error_log_csv(ops.error_log(cdp, job["_id"], "all") or [])
    haystacks["events, jobs, logs, pages"] = json.dumps(docs, default=str)
    assert "CRM_EXTRACT_FAILED" in haystacks["events, jobs, logs, pages"]
    assert job_id_for(runs[0].run_id, ok.cid) in haystacks["xcom"]
    for where, text in haystacks.items():
        for name, secret in SECRETS.items():
            assert secret not in text, f"the {name} secret appears in {where}"
