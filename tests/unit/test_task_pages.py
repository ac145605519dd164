"""Task pages: about TARGET_TASK_PAGES mapped tasks for a large CID, never more than MAX_TASK_PAGES, each k consecutive insert batches."""

from __future__ import annotations

import pytest

from notes_migration.domain.config import MAX_TASK_BATCHES, MAX_TASK_PAGES, TARGET_TASK_PAGES
from notes_migration.domain.rows import Page, batches_of
from notes_migration.run.plan import batches_per_task, group_batches
from notes_migration.stores.job_store import parse_person_map
from notes_migration.tasks.migration_tasks import page_label


def batches(n: int, size: int = 500) -> list[Page]:
    return [Page(page_no=i, lo_id=i * 1000 + 1, hi_id=i * 1000 + 999, size=size) for i in range(n)]


@pytest.mark.parametrize(
    ("n", "max_pages", "expected_pages", "k"),
    [
        (0, 1024, 0, 1),
        (1, 1024, 1, 1),
        (10, 1024, 4, 3),
        (TARGET_TASK_PAGES, 1024, TARGET_TASK_PAGES, 1),  # up to the target: one task per batch
        (TARGET_TASK_PAGES + 1, 1024, 3, 2),
        (96, 1024, 4, 24),  # the 100,000-note CID at batch 1,000: one task per page lane
        (200, 1024, 8, MAX_TASK_BATCHES),
        (2000, 1024, 80, MAX_TASK_BATCHES),  # a million notes at batch 500: tasks stay short
        (30_000, 1024, 1000, 30),  # beyond MAX_TASK_BATCHES only to stay within the cap
        (40, 3, 3, 14),
    ],
)
def test_batches_pack_into_task_pages_of_k_consecutive_batches(n, max_pages, expected_pages, k):
    given = batches(n)
    assert batches_per_task(n, max_pages) == k
    pages = group_batches(given, max_pages)
    assert len(pages) == expected_pages <= max_pages
    assert sum(p["size"] for p in pages) == sum(b.size for b in given)
    unpacked = [b for p in pages for b in batches_of(p)]
    assert unpacked == [b.as_dict() for b in given]  # every batch once, in order, with its own page_no
    for i, page in enumerate(pages):  # each task page is exactly k consecutive batches (the last may hold fewer)
        group = given[i * k : (i + 1) * k]
        assert (page["page_no"], page["lo_id"], page["hi_id"]) == (group[0].page_no, group[0].lo_id, group[-1].hi_id)
        batches_key = {"batches"} if len(group) > 1 else set()
        whole = {"whole_cid"} if len(pages) == 1 else set()  # the CID's only task page: its task relinks too
        assert set(page) == {"page_no", "lo_id", "hi_id", "size"} | batches_key | whole
        assert all(len(b) == 4 and all(isinstance(v, int) for v in b) for b in page.get("batches", []))


def test_a_run_of_a_million_notes_stays_under_the_mapped_task_cap():
    assert len(group_batches(batches(2000), MAX_TASK_PAGES)) <= MAX_TASK_PAGES == 1024
    assert len(group_batches(batches(100_000), MAX_TASK_PAGES)) <= MAX_TASK_PAGES


def test_task_labels_name_their_pages():
    one, packed = group_batches(batches(1))[0], group_batches(batches(40))[0]
    assert page_label(one) == "page 0 · ids 1–999 · 500 rows"
    assert page_label(packed) == "pages 0–9 · ids 1–9999 · 5000 rows"


def test_a_page_parses_only_its_own_persons_from_the_run_map():
    chunks = ["1=a;2=b;30=c", "31=d;300=e", ""]
    assert parse_person_map(chunks, {2, 300, 3, 999}) == {2: "b", 300: "e"}
    assert parse_person_map(chunks, set()) == {}
