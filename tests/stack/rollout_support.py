"""What the rollout stack tests share: seeds without files and a rollout's CID entries."""

from __future__ import annotations

from typing import Any

NO_FILES: dict[str, Any] = {  # no files: a rollout's runs are quick and never fail on a file
    "image_share": 0.0,
    "audio_share": 0.0,
    "document_share": 0.0,
    "unsupported_file_share": 0.0,
    "upload_files": False,
}


def entry(cid: int) -> dict[str, Any]:
    """One `cids` entry of a rollout's conf: the CID and its seeded company."""
    from devtools.seed import company_for

    return {"cid": cid, "company_sso_id": company_for(cid)}
