"""The S3 side of the migration: the CRM assets bucket and CDP's company-scoped files bucket.

All S3 calls of the project live here (as SQL lives in crm_source.py and Mongo in
cdp_store.py). Clients come from `S3Hook`s of the `crm_s3` / `cdp_s3` connections;
the bucket name is the connection's `bucket` extra. botocore's own retries are off
(`max_attempts=1`): the relinker retries transient errors itself, with backoff, so
every attempt is counted and the reason code says which side failed.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any

log = logging.getLogger(__name__)

CHUNK = 256 * 1024  # read size when streaming a source object
SPOOL_BYTES = 1024 * 1024  # a file above this is spooled to a temporary file, never held in memory
MULTIPART_THRESHOLD = 8 * 1024 * 1024  # above this, upload in parts (streamed from the spool)

# S3 error codes worth another attempt (throttling, server-side trouble); 4xx others are final.
TRANSIENT_CODES = frozenset(
    {
        "InternalError",
        "ServiceUnavailable",
        "SlowDown",
        "RequestTimeout",
        "Throttling",
        "ThrottlingException",
        "RequestThrottled",
        "RequestTimeTooSkewed",
        "BadDigest",
        "IncompleteBody",
        "OperationAborted",
    }
)
NOT_FOUND_CODES = frozenset({"404", "NoSuchKey", "NotFound"})


class SizeMismatch(Exception):
    """The bytes read differ from the object's announced length (a truncated stream): transient."""


@dataclass(frozen=True)
class Bucket:
    """A boto3 S3 client (thread-safe) and the bucket it works on."""

    client: Any
    name: str


@dataclass(frozen=True)
class ObjectInfo:
    size: int
    content_type: str | None
    etag: str | None = None


def client_config(concurrency: int = 8):
    """One HTTP connection per worker thread, short timeouts, no hidden botocore retries.

    botocore's flexible checksums (a CRC of every PUT body, a CRC check of every GET) are left to
    "when_required": we already send Content-MD5, which the server verifies, and check the length of
    every download; the extra pass over each body was client CPU per file (measured: benchmarks.relink)."""
    from botocore.config import Config

    return Config(
        retries={"max_attempts": 1, "mode": "standard"},
        max_pool_connections=max(32, concurrency + 2),
        connect_timeout=5,
        read_timeout=60,
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )


def make_hook(conn_id: str, concurrency: int = 8):
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    return S3Hook(aws_conn_id=conn_id, config=client_config(concurrency))


def bucket_name(hook) -> str:
    """The bucket of an S3 connection: extra `bucket` (or the provider's service_config bucket_name)."""
    extra = hook.conn_config.extra_config or {}
    name = extra.get("bucket") or (extra.get("service_config") or {}).get("s3", {}).get("bucket_name")
    if not name:
        raise ValueError(f"connection {hook.aws_conn_id!r} has no 'bucket' in its extras")
    return str(name)


def bucket_from_hook(hook, name: str | None = None) -> Bucket:
    return Bucket(hook.get_conn(), name or bucket_name(hook))


def bucket_for(conn_id: str, *, concurrency: int = 8, name: str | None = None) -> Bucket:
    """A Bucket of an Airflow connection (seeder, benchmark and tests; the operator caches its own hooks)."""
    return bucket_from_hook(make_hook(conn_id, concurrency), name)


# --------------------------------------------------------------------------- error classes


def error_code(exc: BaseException) -> str | None:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code") or response.get("ResponseMetadata", {}).get("HTTPStatusCode"))
    return None


def is_not_found(exc: BaseException) -> bool:
    return error_code(exc) in NOT_FOUND_CODES


def is_transient(exc: BaseException) -> bool:
    """Connection trouble, timeouts, truncated streams, throttling and 5xx are worth retrying."""
    from botocore.exceptions import ConnectionError as BotoConnectionError
    from botocore.exceptions import HTTPClientError, IncompleteReadError

    if isinstance(
        exc, SizeMismatch | HTTPClientError | BotoConnectionError | IncompleteReadError | ConnectionError | TimeoutError
    ):
        return True
    code = error_code(exc)
    if code is None:
        return False
    status = (getattr(exc, "response", {}) or {}).get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
    return code in TRANSIENT_CODES or code.startswith("5") or int(status) >= 500


# --------------------------------------------------------------------------- object calls


def head(bucket: Bucket, key: str) -> ObjectInfo | None:
    """Size and content type of an object, None when it does not exist."""
    try:
        r = bucket.client.head_object(Bucket=bucket.name, Key=key)
    except Exception as exc:
        if is_not_found(exc):
            return None
        raise
    return ObjectInfo(int(r["ContentLength"]), r.get("ContentType"), (r.get("ETag") or "").strip('"') or None)


@dataclass
class Download:
    """A source object streamed into a spool (memory up to SPOOL_BYTES, then a temporary file)."""

    body: IO[bytes]
    size: int
    md5: bytes
    head: bytes  # the first bytes, for the content check

    def close(self) -> None:
        self.body.close()


class TooLarge(Exception):
    def __init__(self, size: int, cap: int):
        super().__init__(f"object is {size} bytes, over the {cap}-byte cap")
        self.size = size


def download(bucket: Bucket, key: str, *, max_bytes: int) -> Download:
    """GET the object and stream it into a spool, checking the announced length and the size cap.

    Raises TooLarge before reading the body when the object is over the cap, SizeMismatch
    when the stream ends early (or runs long), NoSuchKey ClientError when it is missing."""
    r = bucket.client.get_object(Bucket=bucket.name, Key=key)
    stream = r["Body"]
    announced = int(r["ContentLength"])
    if announced > max_bytes:
        stream.close()
        raise TooLarge(announced, max_bytes)
    spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)
    md5 = hashlib.md5(usedforsecurity=False)
    size, first = 0, b""
    try:
        for chunk in _chunks(stream):
            size += len(chunk)
            if size > announced:
                raise SizeMismatch(f"read more than the announced {announced} bytes of {key}")
            if len(first) < 64:
                first += chunk[: 64 - len(first)]
            md5.update(chunk)
            spool.write(chunk)
        if size != announced:
            raise SizeMismatch(f"read {size} of the announced {announced} bytes of {key}")
    except BaseException:
        spool.close()
        raise
    finally:
        stream.close()
    spool.seek(0)
    return Download(spool, size, md5.digest(), first)


def _chunks(stream) -> Iterator[bytes]:
    while True:
        chunk = stream.read(CHUNK)
        if not chunk:
            return
        yield chunk


def upload(bucket: Bucket, key: str, data: Download, content_type: str) -> None:
    """PUT the spooled file with its MD5 (the server rejects a corrupted body), in parts when large."""
    data.body.seek(0)
    if data.size < MULTIPART_THRESHOLD:
        # Content-MD5: the server refuses a body that does not hash to what we read (BadDigest).
        bucket.client.put_object(
            Bucket=bucket.name,
            Key=key,
            Body=data.body,
            ContentLength=data.size,
            ContentType=content_type,
            ContentMD5=base64.b64encode(data.md5).decode(),
        )
        return
    from boto3.s3.transfer import TransferConfig

    bucket.client.upload_fileobj(
        data.body,
        bucket.name,
        key,
        ExtraArgs={"ContentType": content_type},
        Config=TransferConfig(use_threads=False, multipart_threshold=MULTIPART_THRESHOLD),
    )
    stored = head(bucket, key)
    if stored is None or stored.size != data.size:
        raise SizeMismatch(f"stored object {key} has {stored.size if stored else 'no'} bytes, expected {data.size}")


def put(bucket: Bucket, key: str, body: bytes, content_type: str) -> None:
    bucket.client.put_object(Bucket=bucket.name, Key=key, Body=body, ContentType=content_type)


def list_objects(bucket: Bucket, prefix: str = "", limit: int | None = None) -> dict[str, ObjectInfo] | None:
    """{key: info} under a prefix (content type is not part of a listing); None when more than `limit` keys."""
    out: dict[str, ObjectInfo] = {}
    for page in bucket.client.get_paginator("list_objects_v2").paginate(Bucket=bucket.name, Prefix=prefix):
        for obj in page.get("Contents", []):
            out[obj["Key"]] = ObjectInfo(int(obj["Size"]), None, obj.get("ETag", "").strip('"') or None)
        if limit is not None and len(out) > limit:
            return None
    return out


def delete_prefix(bucket: Bucket, prefix: str) -> int:
    """Delete every object under a non-empty prefix (seeder and tests only)."""
    if not prefix:
        raise ValueError("refusing to delete a whole bucket")
    keys = list(list_objects(bucket, prefix) or {})
    for i in range(0, len(keys), 1000):
        bucket.client.delete_objects(
            Bucket=bucket.name, Delete={"Objects": [{"Key": k} for k in keys[i : i + 1000]], "Quiet": True}
        )
    return len(keys)


def ensure_bucket(bucket: Bucket) -> bool:
    """Create the bucket when it is missing; True when it was created."""
    try:
        bucket.client.head_bucket(Bucket=bucket.name)
        return False
    except Exception as exc:
        if error_code(exc) not in ("404", "NoSuchBucket", "NotFound"):
            raise
    try:
        bucket.client.create_bucket(Bucket=bucket.name)
    except Exception as exc:
        if error_code(exc) not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
            raise
        return False
    return True


def main() -> None:
    """`python -m notes_migration.stores.s3_store ensure-buckets`: used by scripts/services.sh after the
    local S3 server starts. Only acts on loopback endpoints (never creates buckets elsewhere)."""
    import sys

    from notes_migration.domain.config import CDP_S3_CONN_ID, CRM_S3_CONN_ID

    if sys.argv[1:] != ["ensure-buckets"]:
        raise SystemExit("usage: python -m notes_migration.stores.s3_store ensure-buckets")
    for conn_id in (CRM_S3_CONN_ID, CDP_S3_CONN_ID):
        hook = make_hook(conn_id)
        endpoint = str((hook.conn_config.extra_config or {}).get("endpoint_url") or "")
        if not endpoint.startswith(("http://127.0.0.1", "http://localhost")):
            print(f"{conn_id}: endpoint is not loopback, leaving its bucket alone")
            continue
        bucket = bucket_from_hook(hook)
        print(f"{conn_id}: bucket {bucket.name} {'created' if ensure_bucket(bucket) else 'present'}")


if __name__ == "__main__":
    os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")
    main()
