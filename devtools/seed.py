"""Deterministic synthetic data for the demo, the tests and the benchmark.

Creates the CRM schema (crm_schema.sql, a copy of the source
contract) and seeds one CID with realistic notes; seeds the CDP side
(`contacts`, `launchpad_users`, a few human-created notes) for its company.
The same CID and options always give the same rows.

    python -m devtools.seed --cid 100 --notes 100
    python -m devtools.seed --demo          # the Stage-1 pair: CIDs 100 and 5000
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import random
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pymongo.database import Database

from devtools import seed_files
from notes_migration.domain import config as C

SCHEMA_SQL = Path(__file__).with_name("crm_schema.sql")
DEFAULT_TYPES = ["Notes", "Calls", "Emails", "Meetings", "WhatsApp", "SMS"]  # global ids 1..6
CUSTOM_TYPES = ["Site visit", "Quote sent"]
_COMPANY_NS = uuid.UUID("0b7d3c1e-5a4f-4e8b-9c2d-6e7f8a9b0c1d")

FIRST = [
    "Ana",
    "Bruno",
    "Chloé",
    "Dmitri",
    "Eun-ji",
    "Fatima",
    "Giulia",
    "Hiro",
    "Ines",
    "João",
    "Kwame",
    "Léa",
    "Mateus",
    "Nadia",
    "Olga",
    "Priya",
    "Quentin",
    "Rafael",
    "Sofia",
    "Tomás",
    "Yuki",
    "Zeynep",
]
LAST = [
    "Silva",
    "Müller",
    "O'Brien",
    "Nguyen",
    "Kowalski",
    "García",
    "Rossi",
    "Tanaka",
    "Smith",
    "Haddad",
    "Ivanova",
    "Okafor",
    "Dubois",
    "Kim",
    "Santos",
    "Fernández",
]


@dataclass(frozen=True)
class SeedSpec:
    cid: int
    notes: int
    unmapped_person_share: float = 0.0  # persons with no CDP contact
    activity_share: float = 0.25
    no_person_share: float = 0.05
    multi_fk_share: float = 0.10
    checkin_share: float = 0.06
    image_share: float = 0.10
    audio_share: float = 0.06
    document_share: float = 0.06
    unsupported_file_share: float = 0.02
    no_creator_share: float = 0.04
    deleted_creator_share: float = 0.03
    unmappable_creator_share: float = 0.08
    ambiguous_contact_share: float = 0.02
    oversize_note_share: float = 0.0  # notes whose HTML is over the size cap
    human_notes: int = 3
    # files in the CRM bucket (seed_files.py): shares of the assets/documents rows per failure path
    missing_file_share: float = 0.02  # no object → ATTACHMENT_DOWNLOAD_FAILED
    mislabelled_file_share: float = 0.03  # content type contradicts the name → relinked, type corrected
    disguised_file_share: float = 0.01  # an executable under an allowlisted name → ATTACHMENT_UNSUPPORTED_TYPE
    oversized_file_share: float = 0.01  # declared over the 25 MB cap → ATTACHMENT_TOO_LARGE
    upload_files: bool = True  # put the files into the crm_s3 bucket (needs the S3 server)

    @property
    def company_sso_id(self) -> str:
        return company_for(self.cid)


def company_for(cid: int) -> str:
    """The CDP company a seeded CID moves into (deterministic)."""
    return str(uuid.uuid5(_COMPANY_NS, f"cid/{cid}"))


DEMO_SPECS = [SeedSpec(cid=100, notes=100), SeedSpec(cid=5000, notes=5000)]


# --------------------------------------------------------------------------- CRM side


def _copy(cur, table: str, rows: list[tuple]) -> None:
    if rows:
        with cur.copy(f"COPY {table} FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)


def ensure_schema(conn) -> None:
    with conn.cursor() as cur:
        cur.execute("SELECT to_regclass('public.crm_notes') IS NOT NULL")
        if not cur.fetchone()[0]:
            cur.execute(SCHEMA_SQL.read_text())
        cur.execute(
            "INSERT INTO crm_note_types (id, organization_id, name) SELECT i, NULL, n "
            "FROM unnest(%s::varchar[]) WITH ORDINALITY AS t(n, i) ON CONFLICT (id) DO NOTHING",
            (DEFAULT_TYPES,),
        )
    conn.commit()


def _ts(rng: random.Random) -> dt.datetime:
    start = dt.datetime(2016, 1, 1)
    return start + dt.timedelta(seconds=rng.randrange(0, 8 * 365 * 86400), microseconds=rng.randrange(1, 1_000_000))


def _name(rng: random.Random) -> tuple[str, str]:
    return rng.choice(FIRST), rng.choice(LAST)


def note_html(rng: random.Random, users: list[tuple[int, str]], big: bool = False) -> str | None:
    """Trix/Rails-sanitised-looking HTML in the canonical form the normaliser keeps as it is."""

    def mention() -> str:
        uid, name = rng.choice(users)
        if rng.random() < 0.5:
            return f'<a href="/users/{uid}" data-user-id="{uid}">@{name}</a>'
        return f'<span data-user-id="{uid}">{name}</span>'

    parts = [
        lambda: "<div>Called about the renewal; follow up next week.</div>",
        lambda: f"<div><strong>Budget:</strong> €{rng.randrange(1, 90)},500 approved by {mention()}</div>",
        lambda: "<ul><li>Send the quote</li><li>Book the site visit</li></ul>",
        lambda: "<div>Notas da reunião: cliente satisfeito 😀 — 日本語のメモ — Привет — مرحبا</div>",
        lambda: f"<div>Spoke with {mention()} and {mention()} about the contract.</div>",
        lambda: "<h1>Visit report</h1><div>Line one<br>line two &amp; three</div>",
        lambda: "<blockquote>They asked for &lt;net 30&gt; terms.</blockquote>",
        lambda: '<div>See <a href="https://example.com/offer?id=7&amp;v=2">the offer</a>.</div>',
        lambda: "<pre>ref: A-1029 / B-77</pre>",
        lambda: "<div><em>Tom</em> said: “we’ll sign in Q3”.</div>",
        lambda: "<ol><li>first</li><li>second</li></ol><div><br></div>",
    ]
    # The CRM stored its notes after Rails' sanitize, so markup outside the allowlist is rare;
    # a small share of legacy notes still carries some (pre-sanitizer rows, hand imports).
    legacy = [
        lambda: '<p>Legacy paragraph with <u>underline</u> and <font color="red">font</font>.</p>',
        lambda: '<div style="color:red" onclick="go()">Imported <b>before</b> the sanitizer</div>',
        lambda: '<figure data-trix-attachment="{}"><img src="https://crm.example/a.png"></figure>',
        lambda: f'<div>Ping <a data-user-id="{rng.choice(users)[0]}"><strong>{rng.choice(users)[1]}</strong></a></div>',
    ]
    roll = rng.random()
    if roll < 0.02:
        return None
    if roll < 0.04:
        return ""
    html = "".join(rng.choice(parts)() for _ in range(rng.randint(1, 4)))
    if rng.random() < 0.03:
        html += rng.choice(legacy)()
    if big:
        html += "<div>" + ("lorem ipsum dolor sit amet " * 25000) + "</div>"
    return html


FILES = {
    "image": [("photo.jpg", "image/jpeg"), ("Whiteboard.PNG", "image/png"), ("site.webp", "image/webp")],
    "audio": [("voice.m4a", "audio/mp4"), ("memo.mp3", "audio/mpeg"), ("call.ogg", "audio/ogg")],
    "document": [
        ("quote.pdf", "application/pdf"),
        ("contract.docx", "application/vnd.openxmlformats-officedocument.wordprocessingml.document"),
        ("prices.xlsx", "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"),
        ("notes.txt", "text/plain"),
    ],
    "unsupported": [("setup.exe", "application/octet-stream"), ("scan.heic", "image/heic")],
}


def seed_crm(conn, spec: SeedSpec) -> dict[str, Any]:
    """(Re)create the CID's rows. Returns what the CDP side needs (persons, users)."""
    rng = random.Random(f"crm/{spec.cid}")
    cid = spec.cid
    ensure_schema(conn)
    with conn.cursor() as cur:
        cur.execute(
            "DELETE FROM assets WHERE assetable_id IN (SELECT id FROM crm_notes WHERE organization_id = %s)", (cid,)
        )
        for table in ("crm_note_attachments", "crm_checkins"):
            cur.execute(
                f"DELETE FROM {table} WHERE crm_note_id IN (SELECT id FROM crm_notes WHERE organization_id = %s)",
                (cid,),
            )
        for table in (
            "crm_notes",
            "crm_people",
            "users",
            "crm_companies",
            "crm_deals",
            "crm_tickets",
            "crm_note_types",
        ):
            cur.execute(f"DELETE FROM {table} WHERE organization_id = %s", (cid,))
        cur.execute("DELETE FROM organizations WHERE id = %s", (cid,))
        now = dt.datetime(2025, 6, 1)
        cur.execute("INSERT INTO organizations VALUES (%s, %s, %s, %s)", (cid, f"Client account {cid}", now, now))

        n_users = max(4, spec.notes // 200)
        users = []
        for k in range(n_users):
            first, last = _name(rng)
            users.append(
                (cid * 1000 + k, cid, f"{first} {last}", f"{first}.{last}.{k}@client{cid}.example".lower(), now, now)
            )
        _copy(cur, "users", users)
        user_names = [(u[0], u[2]) for u in users]

        n_people = max(10, spec.notes // 4)
        people = [(cid * 100_000 + j, cid, *_name(rng), now, now) for j in range(n_people)]
        _copy(cur, "crm_people", people)
        _copy(cur, "crm_companies", [(cid * 100 + k, cid, f"Co {k}") for k in range(5)])
        _copy(cur, "crm_deals", [(cid * 100 + k, cid, f"Deal {k}") for k in range(5)])
        custom_ids = [cid * 100 + k for k in range(len(CUSTOM_TYPES))]
        _copy(cur, "crm_note_types", [(i, cid, n) for i, n in zip(custom_ids, CUSTOM_TYPES, strict=True)])

        notes, assets, docs, checkins = [], [], [], []
        for i in range(spec.notes):
            note_id = cid * 1_000_000 + i + 1
            person = rng.choice(people)[0] if rng.random() >= spec.no_person_share else None
            company = deal = None
            sti = "Crm::PersonNote"
            if person is None:
                company, sti = cid * 100 + rng.randrange(5), "Crm::CompanyNote"
            elif rng.random() < spec.multi_fk_share:
                company, deal = cid * 100 + rng.randrange(5), cid * 100 + rng.randrange(5)
                sti = rng.choice(["Crm::CompanyNote", "Crm::DealNote", "Crm::PersonNote"])
            r = rng.random()
            if r < spec.activity_share:
                type_id = rng.randint(2, 6)
            elif r < spec.activity_share + 0.08:
                type_id = None
            elif r < spec.activity_share + 0.12:
                type_id = rng.choice(custom_ids)
            else:
                type_id = 1
            r = rng.random()
            if r < spec.no_creator_share:
                creator = None
            elif r < spec.no_creator_share + spec.deleted_creator_share:
                creator = cid * 1000 + 999  # a deleted user: no users row
            else:
                creator = rng.choice(users)[0]
            created = _ts(rng)
            updated = created + dt.timedelta(
                seconds=rng.choice([0, 0, 60, 86400 * 3]), microseconds=rng.randrange(0, 999_999)
            )
            html = note_html(rng, user_names, big=rng.random() < spec.oversize_note_share)
            notes.append((note_id, cid, sti, html, person, company, deal, None, creator, type_id, created, updated))
            if rng.random() < spec.checkin_share:
                checkins.append(
                    (
                        note_id,
                        note_id,
                        round(rng.uniform(-40, 50), 7),
                        round(rng.uniform(-80, 80), 7),
                        "Rua Augusta 100, Lisboa",
                        created,
                        created,
                        created,
                    )
                )
            for kind, share, count in (("image", spec.image_share, 2), ("audio", spec.audio_share, 3)):
                if rng.random() < share:
                    for _ in range(rng.randint(1, count)):
                        name, mime = rng.choice(FILES[kind])
                        aid = note_id * 10 + len([a for a in assets if a[3] == note_id])
                        assets.append(
                            (
                                aid,
                                "Crm::NoteImage" if kind == "image" else "Crm::NoteAudio",
                                "Crm::Note",
                                note_id,
                                name,
                                mime,
                                rng.randrange(2_000, 400_000),
                                f"crm/{cid}/assets/{aid}/{name}",
                                created,
                                created,
                            )
                        )
            if rng.random() < spec.document_share or rng.random() < spec.unsupported_file_share:
                pool = (
                    FILES["unsupported"]
                    if rng.random() < spec.unsupported_file_share / max(spec.document_share, 1e-9)
                    else FILES["document"]
                )
                name, mime = rng.choice(pool)
                did = note_id * 10 + 9
                docs.append(
                    (
                        did,
                        note_id,
                        name,
                        mime,
                        rng.randrange(5_000, 900_000),
                        f"crm/{cid}/documents/{did}/{name}",
                        created,
                        created,
                    )
                )
        _copy(cur, "crm_notes", notes)
        assets, docs, files, file_variants = seed_files.prepare(spec, assets, docs)
        if assets:
            _copy(cur, "assets", assets)
        if docs:
            _copy(cur, "crm_note_attachments", docs)
        if checkins:
            _copy(cur, "crm_checkins", checkins)
    conn.commit()
    return {
        "people": [p[0] for p in people],
        "users": users,
        "notes": len(notes),
        "assets": len(assets),
        "documents": len(docs),
        "checkins": len(checkins),
        "files": files,
        "file_variants": dict(file_variants),
    }


# --------------------------------------------------------------------------- CDP side


def seed_cdp(db: Database, spec: SeedSpec, crm: dict[str, Any], *, reset_notes: bool = True) -> dict[str, Any]:
    rng = random.Random(f"cdp/{spec.cid}")
    company = spec.company_sso_id
    db[C.CONTACTS].delete_many({"company_sso_id": company})
    db[C.LAUNCHPAD_USERS].delete_many({"company_sso_id": company})
    if reset_notes:
        db[C.CONTACT_NOTES].delete_many({"company_sso_id": company})
        for coll in (C.JOBS, C.LOCKS, C.PAGES, C.NOTE_LOG, C.AUDIT, C.EVENTS, C.ATTACHMENT_PAGES):
            key = "_id" if coll == C.LOCKS else "cid"
            db[coll].delete_many({key: spec.cid})
    db[C.CONTACTS].create_index("crm_data.id")
    db[C.CONTACTS].create_index([("company_sso_id", 1), ("source_id", 1)])
    created = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    contacts, unmapped = [], []
    for person in crm["people"]:
        if rng.random() < spec.unmapped_person_share:
            unmapped.append(person)
            continue
        contacts.append(_contact(rng, company, person, created))
        if rng.random() < spec.ambiguous_contact_share:
            contacts.append(_contact(rng, company, person, created + dt.timedelta(days=1), force="source"))
    # contacts of other sources and of other companies that must never match
    contacts.append(
        {
            "_id": str(uuid.UUID(int=rng.getrandbits(128))),
            "company_sso_id": company,
            "full_name": "Web lead",
            "source": "web",
            "source_id": str(crm["people"][0]),
            "created_at": created,
            "updated_at": created,
        }
    )
    if contacts:
        db[C.CONTACTS].insert_many(contacts)
    lp_users = []
    for uid, _org, name, email, *_ in crm["users"]:
        r = rng.random()
        if r < spec.unmappable_creator_share:
            continue
        doc = {"_id": str(uuid.UUID(int=rng.getrandbits(128))), "company_sso_id": company, "full_name": name}
        if r < 0.6:
            doc.update(crm_user_id=uid, email=email)
        else:
            doc["email"] = email.upper() if rng.random() < 0.5 else email.title()
        lp_users.append(doc)
    if lp_users:
        db[C.LAUNCHPAD_USERS].insert_many(lp_users)
    human = [
        {
            "company_sso_id": company,
            "contact_id": contacts[0]["_id"],
            "owner_id": None,
            "note": f"<div>Human-written note {k}</div>",
            "attachments": [],
            "created_at": created,
            "updated_at": created,
        }
        for k in range(spec.human_notes if contacts else 0)
    ]
    if human:
        db[C.CONTACT_NOTES].insert_many(human)
    return {
        "contacts": len(contacts),
        "unmapped_persons": len(unmapped),
        "launchpad_users": len(lp_users),
        "human_notes": len(human),
        "unmapped_person_ids": unmapped,
    }


def _contact(rng: random.Random, company: str, person: int, created: dt.datetime, force: str | None = None) -> dict:
    doc: dict[str, Any] = {
        "_id": str(uuid.UUID(int=rng.getrandbits(128))),
        "company_sso_id": company,
        "full_name": f"Person {person}",
        "created_at": created,
        "updated_at": created,
    }
    style = force or rng.choice(["crm_data", "source", "both"])
    if style in ("source", "both"):
        doc.update(source="crm", source_id=str(person), source_name="Legacy CRM")
    else:
        doc["source"] = "crm_import"
    if style in ("crm_data", "both"):
        doc["crm_data"] = {"id": person}
    return doc


def backfill_contacts(db: Database, company_sso_id: str, person_ids: list[int]) -> int:
    """Create the missing contacts (what CDP's contact backfill does before a re-run)."""
    created = dt.datetime(2025, 2, 1, tzinfo=dt.UTC)
    docs = [
        {
            "_id": str(uuid.uuid4()),
            "company_sso_id": company_sso_id,
            "full_name": f"Person {p}",
            "source": "crm",
            "source_id": str(p),
            "crm_data": {"id": p},
            "created_at": created,
            "updated_at": created,
        }
        for p in person_ids
    ]
    if docs:
        db[C.CONTACTS].insert_many(docs)
    return len(docs)


def seed(spec: SeedSpec, crm_conn, db: Database) -> dict[str, Any]:
    crm = seed_crm(crm_conn, spec)
    cdp = seed_cdp(db, spec, crm)
    files = crm.pop("files")
    if spec.upload_files:
        cdp["file_upload"] = seed_files.upload(spec.cid, spec.company_sso_id, files)
    return {
        "cid": spec.cid,
        "company_sso_id": spec.company_sso_id,
        **{k: v for k, v in crm.items() if k not in ("people", "users")},
        "persons": len(crm["people"]),
        **cdp,
    }


def _cid_seeded(crm_source, conn, cid: int) -> bool:
    try:
        return crm_source.cid_exists(conn, cid)
    except Exception:  # no schema yet: nothing is seeded
        conn.rollback()
        return False


def _files_lost(spec: SeedSpec) -> bool:
    """A seeded CID that should have files but has no object left in the CRM bucket: the local S3 server
    keeps its objects in memory, so a restart of the services loses them (the CID is then seeded again)."""
    if not spec.upload_files:
        return False
    from notes_migration.domain.config import CRM_S3_CONN_ID
    from notes_migration.stores import s3_store as s3

    return s3.list_objects(s3.bucket_for(CRM_S3_CONN_ID), f"crm/{spec.cid}/", limit=1) == {}  # None: over 1


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--demo", action="store_true", help="seed the Stage-1 pair (CIDs 100 and 5000)")
    parser.add_argument("--cid", type=int)
    parser.add_argument("--notes", type=int, default=100)
    parser.add_argument("--unmapped-person-share", type=float, default=0.0)
    parser.add_argument("--if-missing", action="store_true", help="seed only CIDs the CRM does not hold yet")
    args = parser.parse_args(argv)
    from notes_migration.stores import crm_source
    from notes_migration.stores.connections import cdp_database, crm_connection

    specs = (
        DEMO_SPECS
        if args.demo
        else [SeedSpec(cid=args.cid, notes=args.notes, unmapped_person_share=args.unmapped_person_share)]
    )
    with crm_connection(read_only=False) as conn:
        for spec in specs:
            if args.if_missing and _cid_seeded(crm_source, conn, spec.cid):
                if not _files_lost(spec):
                    print(json.dumps({"already_seeded": spec.cid}))
                    continue
                print(json.dumps({"reseeding": spec.cid, "why": "its files are not in the CRM bucket"}))
            out = seed(spec, conn, cdp_database())
            out.pop("unmapped_person_ids", None)
            print(json.dumps({"seeded": out, "spec": asdict(spec)}))


if __name__ == "__main__":
    main()
