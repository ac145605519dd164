"""HTML normalisation of CRM note bodies (PRD D-4/D-8).

Sanitising is bleach with an allowlist equal to Rails' default safe list
(rails-html-sanitizer `SafeList::DEFAULT_ALLOWED_TAGS` / `DEFAULT_ALLOWED_ATTRIBUTES`,
URL schemes of Loofah's `ACCEPTABLE_PROTOCOLS`), so markup the CRM already showed
passes through unchanged. Mention markup (an `<a>` or `<span>` carrying
`data-user-id`) becomes plain `@Name` text inside the same pass. No `<p>` is
added. The result is a fixpoint: `normalise(normalise(x)) == normalise(x)`.

Fast path (measured: bleach is pure Python, ~1 ms a note, 4× the cost of the
insert): most CRM notes are already in safe, canonical form. A note whose
mention elements are in the simple canonical shape has them rewritten by a
strict pattern; then, if ammonia (nh3, a WHATWG-parser sanitiser) with the same
allowlist returns the text unchanged, the text is already safe and is kept as
it is. Anything else — every note that needs a change — goes through bleach.
Tests check that both paths agree wherever the fast path applies.
"""

from __future__ import annotations

import html as _html
import re
from dataclasses import dataclass

import bleach
import nh3
from bleach.html5lib_shim import Filter

# rails-html-sanitizer 1.6 Rails::HTML::Concern::SafeList::DEFAULT_ALLOWED_TAGS
ALLOWED_TAGS = frozenset(
    """a abbr acronym address b big blockquote br cite code dd del dfn div dl dt em
    h1 h2 h3 h4 h5 h6 hr i img ins kbd li mark ol p pre samp small span strong sub
    sup time tt ul var""".split()
)
# ... DEFAULT_ALLOWED_ATTRIBUTES (allowed on every allowed tag)
ALLOWED_ATTRIBUTES = frozenset("abbr alt cite class datetime height href lang name src title width xml:lang".split())
# Loofah ACCEPTABLE_PROTOCOLS, less `data:` (Loofah allows it only for some image
# media types, which bleach cannot check; we drop it rather than widen the set).
ALLOWED_PROTOCOLS = frozenset(
    """ed2k ftp http https irc mailto news gopher nntp telnet webcal xmpp callto feed
    urn aim rsync tag ssh sftp rtsp afs""".split()
)
MENTION_ATTRIBUTE = "data-user-id"
MENTION_TAGS = frozenset({"a", "span"})
UNKNOWN_MENTION_NAME = "[Legacy CRM User]"
_MAX_PASSES = 4


class NormalisationError(ValueError):
    """The HTML did not reach a stable sanitised form."""


@dataclass(frozen=True)
class NormalisedHtml:
    html: str
    mentions: int  # how many mention elements became @Name text
    changed: bool  # whether the stored HTML differs from the CRM's


def _allow_attribute(tag: str, name: str, value: str) -> bool:
    if name in ALLOWED_ATTRIBUTES:
        return True
    # Kept only long enough for MentionFilter to see it; it never reaches the output.
    return name == MENTION_ATTRIBUTE and tag in MENTION_TAGS


class MentionFilter(Filter):
    """Replaces a mention element (and anything inside it) by the text `@Name`."""

    def __iter__(self):
        depth = 0
        text: list[str] = []
        self.mentions = 0
        for token in super().__iter__():
            kind = token["type"]
            if depth:
                if kind == "StartTag":
                    depth += 1
                elif kind == "EndTag":
                    depth -= 1
                    if depth == 0:
                        yield {"type": "Characters", "data": _mention_text("".join(text))}
                        text = []
                elif kind in ("Characters", "SpaceCharacters"):
                    text.append(token["data"])
                elif kind == "Entity":
                    text.append(_html.unescape(f"&{token['name']};"))
                continue
            if kind == "StartTag" and token["name"] in MENTION_TAGS and (None, MENTION_ATTRIBUTE) in token["data"]:
                depth = 1
                self.mentions += 1
                continue
            yield token
        if depth:  # unclosed mention at the end of the fragment
            yield {"type": "Characters", "data": _mention_text("".join(text))}


def _mention_text(raw: str) -> str:
    name = " ".join(raw.split()).lstrip("@").strip()
    return "@" + (name or UNKNOWN_MENTION_NAME)


class _CountingMentionFilter:
    """Lets the caller read how many mentions the last pass replaced."""

    last: MentionFilter | None = None

    def __call__(self, source):
        self.last = MentionFilter(source)
        return self.last


def _new_cleaner() -> tuple[bleach.Cleaner, _CountingMentionFilter]:
    counter = _CountingMentionFilter()
    cleaner = bleach.Cleaner(
        tags=ALLOWED_TAGS,
        attributes=_allow_attribute,
        protocols=ALLOWED_PROTOCOLS,
        strip=True,
        strip_comments=True,
        filters=[counter],
    )
    return cleaner, counter


_CLEANER, _COUNTER = _new_cleaner()

_SAFE_SCREEN = nh3.Cleaner(
    tags=set(ALLOWED_TAGS),
    attributes={"*": set(ALLOWED_ATTRIBUTES)},
    url_schemes=set(ALLOWED_PROTOCOLS),
    link_rel=None,
    strip_comments=True,
)
# A mention in the canonical shape CRM stored: no markup and no entity inside.
_SIMPLE_MENTION = re.compile(r'<(a|span)(?: href="[^"<>&]*")? data-user-id="\d+">([^<>&]*)</\1>')


# Characters the HTML parser rewrites (CR, controls, noncharacters): such notes take the full path.
_PARSER_REWRITES = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ufdd0-\ufdef\ufffe\uffff]|[\U0001fffe-\U0010ffff]")


def _fast_path(raw: str) -> NormalisedHtml | None:
    """The result without bleach when the note is already safe and canonical, else None."""
    if _PARSER_REWRITES.search(raw):
        return None
    text, mentions = _SIMPLE_MENTION.subn(lambda m: _mention_text(m.group(2)), raw)
    if "data-user-id" in text or _SAFE_SCREEN.clean(text) != text:
        return None
    return NormalisedHtml(html=text, mentions=mentions, changed=text != raw)


def normalise(raw: str | None) -> NormalisedHtml:
    """Sanitise one note body to its stable, allowlisted form."""
    if not raw:
        return NormalisedHtml(html="", mentions=0, changed=bool(raw))
    fast = _fast_path(raw)
    if fast is not None:
        return fast
    return _bleach_fixpoint(raw)


def _bleach_fixpoint(raw: str) -> NormalisedHtml:
    current = raw
    mentions = 0
    for _ in range(_MAX_PASSES):
        cleaned = _CLEANER.clean(current)
        if _COUNTER.last is not None:
            mentions += _COUNTER.last.mentions
        if cleaned == current:
            return NormalisedHtml(html=cleaned, mentions=mentions, changed=cleaned != raw)
        current = cleaned
    raise NormalisationError(f"HTML did not stabilise after {_MAX_PASSES} passes")
