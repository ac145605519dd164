"""The demo seeding of `scripts/airflow.sh up` (`python -m devtools.seed --demo --if-missing`): a CID
already in the CRM is left alone, unless its files are gone from the CRM bucket (the local S3 server keeps
objects in memory, so a restart of the services loses them); then it is seeded again, files included."""

from __future__ import annotations

from devtools.seed import SeedSpec, _files_lost, main
from notes_migration.domain.config import CRM_S3_CONN_ID
from notes_migration.stores import s3_store as s3
from tests.cids import cids

[CID] = cids(__name__)


def _objects(cid: int) -> dict:
    return s3.list_objects(s3.bucket_for(CRM_S3_CONN_ID), f"crm/{cid}/") or {}


def test_a_seeded_cid_whose_files_were_lost_is_seeded_again(seed_cid, capsys):
    spec = SeedSpec(cid=CID, notes=60)
    seed_cid(spec)
    files = _objects(CID)
    assert files and not _files_lost(spec)

    main(["--cid", str(CID), "--notes", "60", "--if-missing"])
    assert '"already_seeded": 2052' in capsys.readouterr().out  # files there: nothing is redone

    assert s3.delete_prefix(s3.bucket_for(CRM_S3_CONN_ID), f"crm/{CID}/") == len(files)  # as after a restart
    assert _files_lost(spec)
    main(["--cid", str(CID), "--notes", "60", "--if-missing"])
    assert '"reseeding": 2052' in capsys.readouterr().out
    assert set(_objects(CID)) == set(files) and not _files_lost(spec)
