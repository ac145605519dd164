"""HTML normalisation of CRM note bodies (PRD D-4/D-8).

One bleach pass per note with an allowlist equal to Rails' default safe list
(rails-html-sanitizer `SafeList::DEFAULT_ALLOWED_TAGS` / `DEFAULT_ALLOWED_ATTRIBUTES`,
URL schemes of Loofah's `ACCEPTABLE_PROTOCOLS`), so markup the CRM already showed
passes through unchanged. Mention markup (an `<a>` or `<span>` carrying
`data-user-id`) becomes plain `@Name` text inside the same pass. No `<p>` is
added. The result is a fixpoint: `normalise(normalise(x)) == normalise(x)`.
"""

from __future__ import annotations

import html as _html
from dataclasses import dataclass

import bleach
from bleach.html5lib_shim import Filter

# rails-html-sanitizer 1.6 Rails::HTML::Concern::SafeList::DEFAULT_ALLOWED_TAGS
ALLOWED_TAGS = frozenset(
    """a abbr acronym address b big blockquote br cite code dd del dfn div dl dt em
    h1 h2 h3 h4 h5 h6 hr i img ins kbd li mark ol p pre samp small span strong sub
    sup time tt ul var""".split()
)
# ... DEFAULT_ALLOWED_ATTRIBUTES (allowed on every allowed tag)
ALLOWED_ATTRIBUTES = frozenset(
    "abbr alt cite class datetime height href lang name src title width xml:lang".split()
)
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


def normalise(raw: str | None) -> NormalisedHtml:
    """Sanitise one note body to its stable, allowlisted form (one parse when already safe)."""
    if not raw:
        return NormalisedHtml(html="", mentions=0, changed=bool(raw))
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
