"""Real small files for the seeded `assets` / `crm_note_attachments` rows, uploaded to the CRM bucket.

Every file is generated in code (no binary fixtures): a valid 1×1 PNG, an 8×8
baseline JPEG, GIF, WebP, silent MP3 frames, an M4A (ISO BMFF) skeleton, an Ogg
Vorbis identification page, a WAV, a PDF with a correct xref table, DOCX/XLSX
(Office Open XML zips), text. A deterministic share of the rows is made to
exercise each failure path of the relinker:

* missing      – no object under the row's s3_key          → ATTACHMENT_DOWNLOAD_FAILED
* mislabelled  – the row's content type contradicts the name → relinked, content type corrected
* disguised    – an executable under an allowlisted name     → ATTACHMENT_UNSUPPORTED_TYPE
* oversized    – the row declares a size over the 25 MB cap → ATTACHMENT_TOO_LARGE

Variants are drawn from their own random stream per file, so the notes of a
CID stay the same whatever these shares are.
"""

from __future__ import annotations

import base64
import io
import random
import struct
import wave
import zipfile
import zlib
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

OVERSIZED_DECLARED_BYTES = 30 * 1024 * 1024  # over the default 25 MB cap
MISLABEL_TYPES = ["application/octet-stream", "text/html", "application/pdf", "image/png", "audio/mpeg"]


# --------------------------------------------------------------------------- file bytes


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png(n: int) -> bytes:
    rgb = bytes(((n * 37) % 256, (n * 91) % 256, (n * 53) % 256))
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0))
        + _png_chunk(b"IDAT", zlib.compress(b"\x00" + rgb))
        + _png_chunk(b"IEND", b"")
    )


def jpeg(n: int) -> bytes:
    """An 8×8 mid-grey baseline JPEG: one block, DC difference 0 then end-of-block, each a 1-bit Huffman code."""

    def seg(marker: int, body: bytes) -> bytes:
        return struct.pack(">BBH", 0xFF, marker, len(body) + 2) + body

    comment = f"crm seed file {n}".encode()
    return (
        b"\xff\xd8"
        + seg(0xE0, b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00")
        + seg(0xFE, comment)
        + seg(0xDB, b"\x00" + bytes([1] * 64))  # quantisation table 0, all ones
        + seg(0xC0, b"\x08\x00\x08\x00\x08\x01\x01\x11\x00")  # 8-bit, 8×8, one component, table 0
        + seg(0xC4, b"\x00" + bytes([1] + [0] * 15) + b"\x00")  # DC table 0: one code, category 0
        + seg(0xC4, b"\x10" + bytes([1] + [0] * 15) + b"\x00")  # AC table 0: one code, EOB
        + seg(0xDA, b"\x01\x01\x00\x00\x3f\x00")  # scan: component 1, tables 0/0, spectral 0..63
        + b"\x3f"
        + b"\xff\xd9"
    )  # bits 0 (DC cat 0), 0 (EOB), padded with ones


def gif(n: int) -> bytes:
    comment = f"crm seed file {n}".encode()[:255]
    return (
        b"GIF89a\x01\x00\x01\x00\x80\x00\x00\xff\xff\xff\x00\x00\x00"
        + b"\x21\xfe"
        + bytes([len(comment)])
        + comment
        + b"\x00"
        + b",\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"
    )


# The well-known 1×1 lossless WebP (RIFF/WEBP/VP8L), 26 bytes of payload.
_WEBP = base64.b64decode("UklGRhoAAABXRUJQVlA4TA0AAAAvAAAAEAcQERGIiP4HAA==")


def webp(n: int) -> bytes:
    return _WEBP


def mp3(n: int) -> bytes:
    """Silent MPEG-1 Layer III frames (128 kbit/s, 44.1 kHz, mono): 417 bytes each, zero side info."""
    frame = b"\xff\xfb\x90\xc4" + bytes(417 - 4)
    return b"ID3\x03\x00\x00\x00\x00\x00\x00" + frame * (3 + n % 5)


def _box(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body) + 8) + kind + body


def m4a(n: int) -> bytes:
    ftyp = _box(b"ftyp", b"M4A " + struct.pack(">I", 0) + b"M4A mp42isom")
    # version/flags, creation, modification, timescale, duration, rate; volume; reserved; matrix; pre-defined; next track
    mvhd = _box(
        b"mvhd",
        struct.pack(">IIIIII", 0, 0, 0, 1000, 0, 0x00010000)
        + struct.pack(">H", 0x0100)
        + bytes(10)
        + struct.pack(">9I", 0x00010000, 0, 0, 0, 0x00010000, 0, 0, 0, 0x40000000)
        + bytes(24)
        + struct.pack(">I", 1),
    )
    return ftyp + _box(b"moov", mvhd) + _box(b"free", f"crm seed file {n}".encode())


def _ogg_crc(data: bytes) -> int:
    crc = 0
    for byte in data:
        crc ^= byte << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7) if crc & 0x80000000 else crc << 1
            crc &= 0xFFFFFFFF
    return crc


def ogg(n: int) -> bytes:
    """One Ogg page (beginning of stream) holding a Vorbis identification header, with its CRC."""
    packet = b"\x01vorbis" + struct.pack("<IBIiiiBB", 0, 1, 44100, 0, 0, 0, 0xB8, 1)
    header = (
        b"OggS\x00\x02"
        + struct.pack("<qII", 0, (1000 + n) & 0xFFFFFFFF, 0)
        + b"\x00\x00\x00\x00"
        + bytes([1, len(packet)])
    )
    page = header + packet
    crc = _ogg_crc(page)
    return page[:22] + struct.pack("<I", crc) + page[26:]


def wav(n: int) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(bytes(2 * (400 + n % 400)))
    return buf.getvalue()


def pdf(n: int) -> bytes:
    text = f"CRM note attachment {n}"
    stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R /Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length " + str(len(stream)).encode() + b" >>\nstream\n" + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for i, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += f"{i} 0 obj\n".encode() + body + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{o:010d} 00000 n \n".encode() for o in offsets)
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return bytes(out)


def _zip(parts: dict[str, str]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, text in parts.items():
            z.writestr(zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0)), text)
    return buf.getvalue()


_RELS = (
    '<?xml version="1.0" encoding="UTF-8" standalone="yes"?><Relationships xmlns="http://schemas.openxmlformats.org/'
    'package/2006/relationships"><Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/'
    'relationships/officeDocument" Target="{target}"/></Relationships>'
)


def docx(n: int) -> bytes:
    return _zip(
        {
            "[Content_Types].xml": '<?xml version="1.0" encoding="UTF-8" standalone="yes"?><Types xmlns="http://schemas.'
            'openxmlformats.org/package/2006/content-types"><Default Extension="rels" ContentType="application/vnd.openxml'
            'formats-package.relationships+xml"/><Default Extension="xml" ContentType="application/xml"/><Override '
            'PartName="/word/document.xml" ContentType="application/vnd.openxmlformats-officedocument.wordprocessingml.'
            'document.main+xml"/></Types>',
            "_rels/.rels": _RELS.format(target="word/document.xml"),
            "word/document.xml": '<?xml version="1.0" encoding="UTF-8" standalone="yes"?><w:document xmlns:w="http://'
            'schemas.openxmlformats.org/wordprocessingml/2006/main"><w:body><w:p><w:r><w:t>'
            f"Contract draft {n}</w:t></w:r></w:p></w:body></w:document>",
        }
    )


def xlsx(n: int) -> bytes:
    return _zip(
        {
            "[Content_Types].xml": '<?xml version="1.0" encoding="UTF-8" standalone="yes"?><Types xmlns="http://schemas.'
            'openxmlformats.org/package/2006/content-types"><Default Extension="rels" ContentType="application/vnd.openxml'
            'formats-package.relationships+xml"/><Default Extension="xml" ContentType="application/xml"/><Override '
            'PartName="/xl/workbook.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.'
            'main+xml"/><Override PartName="/xl/worksheets/sheet1.xml" ContentType="application/vnd.openxmlformats-'
            'officedocument.spreadsheetml.worksheet+xml"/></Types>',
            "_rels/.rels": _RELS.format(target="xl/workbook.xml"),
            "xl/workbook.xml": '<?xml version="1.0" encoding="UTF-8" standalone="yes"?><workbook xmlns="http://schemas.'
            'openxmlformats.org/spreadsheetml/2006/main" xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/'
            'relationships"><sheets><sheet name="Prices" sheetId="1" r:id="rId1"/></sheets></workbook>',
            "xl/_rels/workbook.xml.rels": _RELS.replace('officeDocument" Target', 'worksheet" Target').format(
                target="worksheets/sheet1.xml"
            ),
            "xl/worksheets/sheet1.xml": '<?xml version="1.0" encoding="UTF-8" standalone="yes"?><worksheet xmlns="http://'
            'schemas.openxmlformats.org/spreadsheetml/2006/main"><sheetData><row r="1"><c r="A1"><v>'
            f"{n}</v></c></row></sheetData></worksheet>",
        }
    )


def text(n: int) -> bytes:
    return f"Notes from the visit #{n}\nFollow up next week.\n".encode()


def exe(n: int) -> bytes:
    """A PE header skeleton: what a renamed executable starts with."""
    head = bytearray(b"MZ" + bytes(0x3A) + struct.pack("<I", 0x40))
    return bytes(head) + b"PE\x00\x00" + struct.pack("<HHIIIHH", 0x14C, 0, 0, 0, 0, 0, 0x0102) + bytes(64)


def heic(n: int) -> bytes:
    return _box(b"ftyp", b"heic" + struct.pack(">I", 0) + b"mif1heic") + _box(b"free", bytes(16))


GENERATORS: dict[str, Callable[[int], bytes]] = {
    "png": png,
    "jpg": jpeg,
    "jpeg": jpeg,
    "gif": gif,
    "webp": webp,
    "mp3": mp3,
    "m4a": m4a,
    "ogg": ogg,
    "oga": ogg,
    "wav": wav,
    "pdf": pdf,
    "docx": docx,
    "xlsx": xlsx,
    "txt": text,
    "csv": text,
    "exe": exe,
    "heic": heic,
}


def sample_bytes(file_name: str, n: int) -> bytes:
    """Valid bytes for a file of that extension (generic bytes for an extension we do not generate)."""
    ext = file_name.rsplit(".", 1)[-1].lower() if "." in file_name else ""
    return GENERATORS.get(ext, lambda k: f"file {k}\n".encode())(n)


# --------------------------------------------------------------------------- variants and rows


@dataclass(frozen=True)
class SeedFile:
    key: str
    body: bytes
    content_type: str


def variant(cid: int, ref: str, spec: Any) -> str:
    r = random.Random(f"files/{cid}/{ref}").random()
    for name, share in (
        ("missing", spec.missing_file_share),
        ("mislabelled", spec.mislabelled_file_share),
        ("disguised", spec.disguised_file_share),
        ("oversized", spec.oversized_file_share),
    ):
        if r < share:
            return name
        r -= share
    return "ok"


def prepare(
    spec: Any, assets: list[tuple], docs: list[tuple]
) -> tuple[list[tuple], list[tuple], list[SeedFile], Counter]:
    """Rows with real declared sizes (and the variants' content types/sizes), plus the objects to upload.

    assets rows: (id, type, assetable_type, note_id, name, content_type, size, s3_key, created, updated);
    crm_note_attachments rows: (id, note_id, name, content_type, size, s3_key, created, updated)."""
    files: list[SeedFile] = []
    counts: Counter = Counter()

    def one(ref: str, file_id: int, name: str, mime: str, key: str) -> tuple[str, int]:
        kind = variant(spec.cid, ref, spec)
        counts[kind] += 1
        body = exe(file_id) if kind == "disguised" else sample_bytes(name, file_id)
        declared_mime = mime
        if kind == "mislabelled":  # a content type of another kind than the name says
            declared_mime = [m for m in MISLABEL_TYPES if m != mime][file_id % (len(MISLABEL_TYPES) - 1)]
        if kind != "missing":
            files.append(SeedFile(key, body, declared_mime))
        return declared_mime, OVERSIZED_DECLARED_BYTES if kind == "oversized" else len(body)

    out_assets = []
    for a in assets:
        mime, size = one(f"asset-{a[0]}", a[0], a[4], a[5], a[7])
        out_assets.append((*a[:5], mime, size, *a[7:]))
    out_docs = []
    for d in docs:
        mime, size = one(f"document-{d[0]}", d[0], d[2], d[3], d[5])
        out_docs.append((*d[:3], mime, size, *d[5:]))
    return out_assets, out_docs, files, counts


def upload(cid: int, company_sso_id: str, files: list[SeedFile], *, threads: int = 16) -> dict[str, int]:
    """Replace the CID's objects in the CRM bucket (and clear its company's CDP prefix, as the notes are reset)."""
    from notes_migration.domain.config import CDP_S3_CONN_ID, CRM_S3_CONN_ID
    from notes_migration.stores import s3_store as s3

    crm = s3.bucket_for(CRM_S3_CONN_ID, concurrency=threads)
    cdp = s3.bucket_for(CDP_S3_CONN_ID, concurrency=threads)
    s3.ensure_bucket(crm)
    s3.ensure_bucket(cdp)
    removed = s3.delete_prefix(crm, f"crm/{cid}/") + s3.delete_prefix(cdp, f"{company_sso_id}/")
    if files:
        with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="seed-s3") as pool:
            list(pool.map(lambda f: s3.put(crm, f.key, f.body, f.content_type), files))
    return {"uploaded": len(files), "bytes": sum(len(f.body) for f in files), "removed": removed}
