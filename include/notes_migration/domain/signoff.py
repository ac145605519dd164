"""The sign-off sample, pure: which of a CID's notes QA and CSMs look at, and what the sanitiser changed in each.

A sample covers what can go wrong (every reason code and warning the run recorded, mentions, flattened notes,
unresolved owners, each attachment kind, unavailable files, the oldest and newest note) plus a random draw whose
seed is shown, so anyone can draw the same sample again. ops/signoff.py gathers the candidates; this module only
chooses and explains."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from html.parser import HTMLParser

RANDOM_DRAW = 5  # notes drawn at random beside the chosen ones
MAX_RANDOM_DRAW = 500
SEED_MAX = 2**31 - 1
MAX_VERDICT_CHARS = 4000


@dataclass
class Pick:
    """One note of the sample and why it is in it (one or more reasons: `reason:CODE`, `mention`, `oldest` …)."""

    note_id: int
    why: list[str] = field(default_factory=list)


def new_seed() -> int:
    return random.SystemRandom().randint(1, SEED_MAX)


def choose(
    candidates: Mapping[str, Sequence[int]], all_ids: Sequence[int], *, seed: int, random_draw: int = RANDOM_DRAW
) -> list[Pick]:
    """One note per category (its first candidate not chosen already when one exists, so more notes get looked
    at), then `random_draw` others drawn with `seed`; in the order of the categories, the draw last."""
    picks: dict[int, Pick] = {}
    for category, ids in candidates.items():
        if not ids:
            continue
        fresh = next((i for i in ids if i not in picks), ids[0])
        picks.setdefault(int(fresh), Pick(int(fresh))).why.append(category)
    rest = sorted(set(int(i) for i in all_ids) - picks.keys())
    for note_id in random.Random(seed).sample(rest, min(max(0, random_draw), len(rest))):
        picks[note_id] = Pick(note_id, [f"random draw (seed {seed})"])
    return list(picks.values())


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: Counter[str] = Counter()
        self.attributes: Counter[str] = Counter()
        self.mentions = 0
        self.raw_text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags[tag] += 1
        for name, _ in attrs:
            self.attributes[f"{tag}[{name}]"] += 1
            if name == "data-user-id":
                self.mentions += 1


def _parse(html: str | None) -> _Tags:
    parser = _Tags()
    parser.feed(html or "")
    parser.close()
    return parser


def sanitiser_changes(original: str | None, stored: str | None) -> list[str]:
    """What the stored HTML lost against the CRM's, in words: elements and attributes removed, mentions made
    plain text. Counted, not diffed: enough for a person to see why the two panes differ."""
    if (original or "") == (stored or ""):
        return []
    before, after = _parse(original), _parse(stored)
    out: list[str] = []
    if before.mentions:
        out.append(f"{before.mentions} mention(s) became plain @Name text (nobody is notified)")
    gone_tags = before.tags - after.tags
    if gone_tags:
        out.append("elements removed: " + ", ".join(f"<{t}> ×{n}" for t, n in sorted(gone_tags.items())))
    gone_attrs = Counter({k: n for k, n in (before.attributes - after.attributes).items() if "data-user-id" not in k})
    if gone_attrs:
        out.append("attributes removed: " + ", ".join(f"{a} ×{n}" for a, n in sorted(gone_attrs.items())))
    if not out:
        out.append("markup rewritten to its safe, canonical form (same elements and attributes)")
    return out
