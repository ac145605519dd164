"""transform.decide() around the sanitiser: size cap before any parse, no exception out, the flattening warning."""

from __future__ import annotations

import pytest

from notes_migration.domain import transform
from notes_migration.domain.codes import Reason
from notes_migration.domain.html import MAX_DEPTH
from tests.unit.test_transform import row, run


def test_the_raw_size_cap_applies_before_normalising(monkeypatch):
    monkeypatch.setattr(transform, "normalise", lambda *a, **k: pytest.fail("normalised a note over the cap"))
    d = run(row(note="<" * 10_001), cap=10_000)
    assert (d.failure, d.doc) == (Reason.NOTE_TOO_LARGE, None)
    assert d.details == "raw HTML is 10001 bytes, cap 10000"


def test_the_raw_cap_counts_utf8_bytes_and_lone_surrogates():
    assert run(row(note="é" * 5_001), cap=10_000).failure == Reason.NOTE_TOO_LARGE  # 10,002 bytes
    d = run(row(note="x\udfff" * 2), cap=10_000)
    assert d.failure is None and d.doc["note"] == "x\ufffdx\ufffd"


def test_the_normalised_cap_still_applies():
    d = run(row(note="<" * 3_000), cap=10_000)  # 3 KB raw, 12 KB of &lt; once normalised
    assert d.failure == Reason.NOTE_TOO_LARGE and "normalised HTML is 12000 bytes" in d.details


@pytest.mark.parametrize(
    "exc", [RuntimeError("boom"), UnicodeEncodeError("utf-8", "x", 0, 1, "surrogate"), RecursionError()]
)
def test_any_exception_from_normalising_is_a_reason_coded_failure(monkeypatch, exc):
    def explode(*a, **k):
        raise exc

    monkeypatch.setattr(transform, "normalise", explode)
    d = run(row(note="<div>x</div>"))
    assert (d.failure, d.doc) == (Reason.HTML_NORMALISATION_FAILED, None)
    assert d.details.startswith(type(exc).__name__)


def test_a_flattened_note_is_migrated_with_a_warning():
    d = run(row(note="<div>" * (MAX_DEPTH + 5) + "Deal <b>closed</b> &amp; signed"), cap=100_000)
    assert d.failure is None and d.skip is None
    assert d.doc["note"] == "Deal closed &amp; signed"
    assert d.warnings == [Reason.HTML_FLATTENED_TO_TEXT]
    assert "nested deeper" in d.warning_details


@pytest.mark.parametrize(
    "note, stored",
    [
        (
            "<abbr title='The \"Q&amp;A\" page'>Q&amp;A</abbr>",
            '<abbr title="The &quot;Q&amp;A&quot; page">Q&amp;A</abbr>',
        ),
        ("<div>ok</div>", "<div>ok</div>"),
        (None, ""),
    ],
)
def test_benign_notes_are_migrated_without_warnings(note, stored):
    d = run(row(note=note))
    assert (d.failure, d.warnings, d.doc["note"]) == (None, [], stored)


def test_the_warning_is_not_a_failure_in_the_vocabulary():
    assert Reason.HTML_FLATTENED_TO_TEXT.value == "HTML_FLATTENED_TO_TEXT"
    d = run(row(note="<ul><li>" * 5000), cap=512 * 1024)  # the probe's 40 KB, 8 s note
    assert d.doc is not None and d.failure is None and d.warnings == [Reason.HTML_FLATTENED_TO_TEXT]
