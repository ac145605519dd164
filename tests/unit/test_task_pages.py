"""Task pages: at most MAX_TASK_PAGES mapped tasks per run, each up to k consecutive insert batches."""

from __future__ import annotations

import pytest

from notes_migration.config import MAX_TASK_PAGES
from notes_migration.crm_source import Page
from notes_migration.job_store import parse_person_map
from notes_migration.pages import group_batches


def batches(n: int, size: int = 500) -> list[Page]:
    return [Page(page_no=i, lo_id=i * 1000 + 1, hi_id=i * 1000 + 999, size=size) for i in range(n)]


@pytest.mark.parametrize(
    ("n", "max_pages", "expected_pages", "k"),
    [
        (0, 1024, 0, 1),
        (1, 1024, 1, 1),
        (10, 1024, 10, 1),
        (1024, 1024, 1024, 1),
        (1025, 1024, 513, 2),
        (2500, 1024, 834, 3),
        (7, 3, 3, 3),
    ],
)
def test_batches_group_into_at_most_max_pages_contiguous_task_pages(n, max_pages, expected_pages, k):
    given = batches(n)
    pages = group_batches(given, max_pages)
    assert len(pages) == expected_pages <= max_pages
    assert [p.page_no for p in pages] == list(range(len(pages)))
    assert sum(p.size for p in pages) == sum(b.size for b in given)
    for i, page in enumerate(pages):  # each task page is exactly k consecutive batches (the last may hold fewer)
        group = given[i * k : (i + 1) * k]
        assert (page.lo_id, page.hi_id, page.size) == (group[0].lo_id, group[-1].hi_id, sum(b.size for b in group))
        assert set(page.as_dict()) == {"page_no", "lo_id", "hi_id", "size"}  # descriptors stay small


def test_a_run_of_a_million_notes_stays_under_the_mapped_task_cap():
    assert len(group_batches(batches(2000), MAX_TASK_PAGES)) <= MAX_TASK_PAGES == 1024


def test_a_page_parses_only_its_own_persons_from_the_run_map():
    chunks = ["1=a;2=b;30=c", "31=d;300=e", ""]
    assert parse_person_map(chunks, {2, 300, 3, 999}) == {2: "b", 300: "e"}
    assert parse_person_map(chunks, set()) == {}
