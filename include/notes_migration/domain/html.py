"""HTML normalisation of CRM note bodies (PRD D-4/D-8).

Sanitising is bleach with an allowlist taken from Rails' default safe list
(rails-html-sanitizer `SafeList::DEFAULT_ALLOWED_TAGS` / `DEFAULT_ALLOWED_ATTRIBUTES`,
URL schemes of Loofah's `ACCEPTABLE_PROTOCOLS`), so markup the CRM already showed
passes through unchanged, with cuts so that the CDP front end's DOMPurify (default
config) never has anything left to remove: no `name` attribute (DOM clobbering:
`<img name="cookie">` shadows `document.cookie`; DOMPurify strips such names, we
drop `name` altogether), only the URL schemes both Loofah and DOMPurify accept
(no `data:`), checked on every non-text attribute whatever follows the scheme
(`javascript:123` included), and DOMPurify's rule against attribute values that
could break out of a comment or raw-text element (`-->`, `]>`, `</style`). Mention
markup (an `<a>` or `<span>` carrying `data-user-id`) becomes plain `@Name` text
built from the mention's text nodes only. The content of `<script>`/`<style>` is
dropped, never kept as text. No `<p>` is added. The result is a fixpoint:
`normalise(normalise(x)) == normalise(x)`.

Bounded cost, before any parse: the raw body is capped in bytes, code points the
HTML parser would rewrite (lone surrogates, NUL, other controls, noncharacters)
are replaced by U+FFFD, CR/CRLF by LF and FF by a space, a bare `<` or `&` is
written as `&lt;`/`&amp;` (same meaning, one token less), and a linear pre-scan estimates the
nesting depth and the attribute count of each tag (html5lib is quadratic in both).
A note beyond those bounds, or one whose sanitised form does not reach a fixed
point, is *flattened*: its text, escaped, with a reason (`NormalisedHtml.flattened`,
reported as `Reason.HTML_FLATTENED_TO_TEXT`); it is never lost.

Fast path (bleach is pure Python, slow per note): most CRM notes are already in
safe, canonical form. A note whose mention elements are in the simple canonical
shape has them rewritten by a strict pattern; then, if ammonia (nh3, a
WHATWG-parser sanitiser) with the same allowlist and the same URL rule returns
the text unchanged, the text is already safe and is kept as it is. Anything else
goes through bleach. Tests check over every corpus input that the fast path
never keeps what bleach would change. After a bleach pass the same screen
confirms the fixed point, so a changed note costs one bleach parse, not two.
"""

from __future__ import annotations

import html as _html
import re
from dataclasses import dataclass
from typing import Any

import nh3
from bleach import html5lib_shim
from bleach.sanitizer import BleachSanitizerFilter

# rails-html-sanitizer 1.6 Rails::HTML::Concern::SafeList::DEFAULT_ALLOWED_TAGS
ALLOWED_TAGS = frozenset(
    """a abbr acronym address b big blockquote br cite code dd del dfn div dl dt em
    h1 h2 h3 h4 h5 h6 hr i img ins kbd li mark ol p pre samp small span strong sub
    sup time tt ul var""".split()
)
# ... DEFAULT_ALLOWED_ATTRIBUTES (allowed on every allowed tag), less `name` (DOM clobbering).
ALLOWED_ATTRIBUTES = frozenset("abbr alt cite class datetime height href lang src title width xml:lang".split())
# The allowed attributes whose value is a URL: their scheme must be in ALLOWED_PROTOCOLS.
URL_ATTRIBUTES = frozenset({"href", "src", "cite"})
# Loofah's ACCEPTABLE_PROTOCOLS that DOMPurify's default URI allowlist also accepts: the CDP front end drops any
# other scheme (irc:, news:, ssh:, webcal:, ...), so keeping them would store links it never renders. `data:` is
# out too (Loofah allows it only for some image media types, which bleach cannot check).
ALLOWED_PROTOCOLS = frozenset("ftp http https mailto xmpp callto".split())
MENTION_ATTRIBUTE = "data-user-id"
MENTION_TAGS = frozenset({"a", "span"})
UNKNOWN_MENTION_NAME = "[Legacy CRM User]"
# Elements whose content is code, never note text: dropped with the element (as nh3 and DOMPurify do).
CONTENT_DROPPED_TAGS = frozenset({"script", "style"})

MAX_INPUT_BYTES = 512 * 1024  # default raw cap (transform passes Thresholds.note_size_cap_bytes)
MAX_DEPTH = 128  # estimated nesting depth above which a note is flattened to text
MAX_ATTRIBUTES = 128  # attributes on one tag above which a note is flattened to text
_MAX_PASSES = 3


class NormalisationError(ValueError):
    """The HTML could not be normalised at all (a note that is only odd is flattened instead)."""


class InputTooLarge(NormalisationError):
    """The raw body exceeds the byte cap; refused before any parse."""


@dataclass(frozen=True)
class NormalisedHtml:
    html: str
    mentions: int  # how many mention elements became @Name text
    changed: bool  # whether the stored HTML differs from the CRM's
    flattened: str | None = None  # why the markup was reduced to its escaped text (None: it was not)


# --------------------------------------------------------------------------- code points and size


# What the HTML parser (or bleach, which writes "?" for controls) would rewrite or report: CR (CRLF and lone CR
# become LF, as the parser does), FF (HTML whitespace: a space), lone surrogates, the other C0 controls but TAB and
# LF, DEL, C1 controls, noncharacters (U+FDD0..U+FDEF, U+xFFFE, U+xFFFF): all but CR and FF become U+FFFD.
# The class is broad in the astral planes (a cheap scan); _code_point decides there.
_SUSPECT_CLASS = "[\x0c\ud800-\udfff\x00-\x08\x0b\x0e-\x1f\x7f-\x9f\ufdd0-\ufdef\ufffe\uffff\U0001fffe-\U0010ffff]"
_SUSPECT = re.compile("\r\n?|" + _SUSPECT_CLASS)
_SUSPECT_CHAR = re.compile("[\r" + _SUSPECT_CLASS[1:])  # for the search: one class, no CRLF branch to try


def _code_point(m: re.Match) -> str:
    c = m.group()
    if c[0] == "\r":
        return "\n"
    if c == "\x0c":
        return " "
    if c > "\U0001fffd" and (ord(c) & 0xFFFE) != 0xFFFE:
        return c  # an ordinary astral character
    return "\ufffd"


def _scrub_code_points(text: str) -> str:
    """Deterministic replacement (U+FFFD) of what the parser would rewrite, and CR → LF: before anything else."""
    return _SUSPECT.sub(_code_point, text) if _SUSPECT_CHAR.search(text) else text


# A `<` that cannot open a tag, and a `&` that starts no character reference (a known `&name;`, `&#digits;`,
# `&#xhex;`) are text whatever the context: written as `&lt;` / `&amp;` up front, the HTML means the same (bleach
# would have escaped them too, but kept an unknown `&x;` as if it were a reference), the note can take the fast
# path, and html5lib no longer spends a token (and a parse error) on each of them. Identity on outputs.
_BARE_LT = re.compile(r"<(?![A-Za-z/!?])")
_AMP = re.compile(r"&(?:([A-Za-z][A-Za-z0-9]*;)|#[0-9]+;|#[xX][0-9a-fA-F]+;)?")
_UNCOMMON_AMP = re.compile(r"&(?!(?:amp|lt|gt|quot|nbsp|#39);)")  # the common references need no look-up
_ENTITIES = html5lib_shim.ENTITIES  # names with their `;` ("amp;") and the legacy ones without


def _amp(m: re.Match) -> str:
    name = m.group(1)
    if m.end() - m.start() == 1 or (name is not None and name not in _ENTITIES):
        return "&amp;" + (name or "")
    return m.group()


# A character reference to CR puts a CR in the DOM, which any later serialise-and-parse (DOMPurify's output
# set as innerHTML) turns into LF: written as LF up front, like a literal CR.
_CR_REFERENCE = re.compile(r"&#(?:0*13|[xX]0*[dD]);")


def _prepare(text: str) -> str:
    text = _scrub_code_points(text)
    if "<" in text:
        text = _BARE_LT.sub("&lt;", text)
    if "&" not in text:
        return text
    if "&#" in text:
        text = _CR_REFERENCE.sub("\n", text)
    return _AMP.sub(_amp, text) if _UNCOMMON_AMP.search(text) else text


def utf8_size(text: str) -> int:
    """Bytes of `text` in UTF-8, lone surrogates counted as 3 (they become U+FFFD)."""
    return len(text.encode("utf-8", "surrogatepass"))


# --------------------------------------------------------------------------- the linear pre-scan

_TAG = re.compile(r"<(/?)([A-Za-z][^\s/<>]*)([^<>]*)")
_QUOTED = re.compile(r"\"[^\"]*\"|'[^']*'")
_VOID = frozenset(
    "area base br col embed hr img input keygen link meta param source track wbr basefont bgsound frame image".split()
)
# A start tag of one of these closes an open one of the same name when only inline elements lie between.
_SIBLING_CLOSED = frozenset("li dt dd p option optgroup tr td th rt rp rb rtc".split())
_INLINE = frozenset(
    """a abbr acronym b bdi bdo big cite code del dfn em font i ins kbd mark q s samp small span strike strong
    sub sup time tt u var""".split()
)


_LONG = 2 * MAX_ATTRIBUTES  # an attribute takes at least two characters (a space and a name)
_LONG_TAG = re.compile(r"<[A-Za-z][^\s/<>]*([^<>]{" + str(_LONG + 1) + ",})")


def _attribute_count(rest: str) -> int:
    """Attributes in a tag's text after its name (over-counts a spaced `a = b`; never under-counts)."""
    return len(_QUOTED.sub('""', rest).split()) if ("'" in rest or '"' in rest) else len(rest.split())


def _prescan(text: str) -> str | None:
    """Why the note is beyond the parser's linear range (nesting, attributes), or None. O(len × MAX_DEPTH) at most."""
    tags = text.count("<")
    if tags <= MAX_DEPTH:  # the common case: too few tags to nest that deep; only a very long tag can hold so many
        for m in _LONG_TAG.finditer(text):
            if _attribute_count(m.group(1)) > MAX_ATTRIBUTES:
                return f"a tag with more than {MAX_ATTRIBUTES} attributes"
        return None
    stack: list[str] = []
    foreign = 0  # open svg/math elements, where `/>` really closes
    for m in _TAG.finditer(text):
        closing, name, rest = m.group(1), m.group(2).lower(), m.group(3)
        if closing:
            for i in range(len(stack) - 1, -1, -1):
                if stack[i] == name:
                    foreign -= sum(1 for n in stack[i:] if n in ("svg", "math"))
                    del stack[i:]
                    break
            continue
        if len(rest) > _LONG and _attribute_count(rest) > MAX_ATTRIBUTES:
            return f"a tag with more than {MAX_ATTRIBUTES} attributes"
        if name in _VOID or (foreign and rest.endswith("/")):
            continue
        if name in _SIBLING_CLOSED:
            for i in range(len(stack) - 1, -1, -1):
                if stack[i] == name:
                    del stack[i:]
                    break
                if stack[i] not in _INLINE:
                    break
        stack.append(name)
        if name in ("svg", "math"):
            foreign += 1
        if len(stack) > MAX_DEPTH:
            return f"markup nested deeper than {MAX_DEPTH} levels"
    return None


# --------------------------------------------------------------------------- flattening (the best-effort result)

_COMMENT = re.compile(r"<!--[\s\S]*?(?:-->|\Z)")
_DROPPED_ELEMENT = re.compile(r"<(script|style)\b[\s\S]*?(?:</\1\s*>|\Z)", re.IGNORECASE)
_ANY_TAG = re.compile(r"</?[A-Za-z!?][^<>]*>?")


def _escape_text(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("\xa0", "&nbsp;")


def _as_text(text: str) -> str:
    """The note's text, escaped: no markup at all. Linear (every pattern stops at the next `<` or at the end)."""
    text = _ANY_TAG.sub("", _DROPPED_ELEMENT.sub("", _COMMENT.sub("", text)))
    return _escape_text(_scrub_code_points(_html.unescape(text)))


def _flattened(raw: str, text: str, why: str) -> NormalisedHtml:
    html = _as_text(text)
    return NormalisedHtml(html=html, mentions=0, changed=html != raw, flattened=why)


# --------------------------------------------------------------------------- attribute values

_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*):")
# Removed before reading a scheme: what a browser ignores in a URL (C0 and space; tab and newline anywhere) and
# what DOMPurify compacts away (Unicode spaces). Removing them everywhere can only find more schemes, never fewer.
_URL_IGNORED = re.compile("[\x00-\x20\x7f-\xa0\u1680\u180e\u2000-\u2029\u205f\u3000\ufeff]+")
# DOMPurify 3.5 ATTR_VALUE_BREAKOUT (SAFE_FOR_XML): a value that could close a comment, a CDATA section or a
# raw-text element when the markup is re-serialised elsewhere (mXSS). The front end drops such attributes.
_VALUE_BREAKOUT = re.compile(
    r"((--!?|])>)|</(style|script|title|xmp|textarea|noscript|iframe|noembed|noframes)", re.IGNORECASE
)
# Attributes whose value is text, never a URL (DOMPurify's URI_SAFE_ATTRIBUTES within our allowlist); every other
# allowed attribute (href, src, cite, and abbr, datetime, lang, width, ... too, as DOMPurify checks them) must not
# start with a scheme outside ALLOWED_PROTOCOLS.
TEXT_ATTRIBUTES = frozenset({"alt", "class", "title"})


# What bleach strips from a URL before it reads the scheme (backticks, whitespace, controls, every non-ASCII
# character, U+FFFD included): `ja\ufffdvascript:` is `javascript:` to bleach. Read both ways, so the fast path
# and the bleach path give one answer for one input.
_BLEACH_URL_IGNORED = re.compile(r"[`\x00-\x20\x7f-\xa0\s]+|[^\x00-\x7f]")


def url_allowed(decoded: str) -> bool:
    """Whether a value (entities decoded) names no scheme or an allowed one, whatever follows it (digits too),
    read as the browser's sanitiser reads it and as bleach does."""
    for seen in (_URL_IGNORED.sub("", decoded), _BLEACH_URL_IGNORED.sub("", decoded)):
        m = _SCHEME.match(seen)
        if m is not None and m.group(1).lower() not in ALLOWED_PROTOCOLS:
            return False
    return True


def value_allowed(name: str, decoded: str) -> bool:
    """The one rule for an allowed attribute's value, shared by the bleach path and the fast-path screen."""
    if _VALUE_BREAKOUT.search(decoded):
        return False
    return name in TEXT_ATTRIBUTES or url_allowed(decoded)


def _allow_attribute(tag: str, name: str, value: str) -> bool:
    # bleach keeps entities as written (consume_entities=False): decode them as the browser will.
    return name in ALLOWED_ATTRIBUTES and value_allowed(name, _html.unescape(value) if "&" in value else value)


# --------------------------------------------------------------------------- the bleach path


def _mention_text(raw: str) -> str:
    name = " ".join(raw.split()).lstrip("@").strip()
    return "@" + (name or UNKNOWN_MENTION_NAME)


class _MentionAndCodeFilter(html5lib_shim.Filter):
    """Before sanitising: a mention element becomes `@Name` (its text nodes only); script/style go with their content.

    Runs on the parsed tree's tokens, where text still holds its entities as written (bleach does not decode them).
    """

    mentions = 0

    def __iter__(self):
        drop = 0  # depth inside a dropped element
        mention = 0  # depth inside a mention element
        text: list[str] = []
        for token in super().__iter__():
            kind = token["type"]
            if drop:
                if kind == "StartTag":
                    drop += 1
                elif kind == "EndTag":
                    drop -= 1
                continue
            if kind == "StartTag" and token["name"] in CONTENT_DROPPED_TAGS:
                drop = 1
                continue
            if mention:
                if kind == "StartTag":
                    mention += 1
                elif kind == "EndTag":
                    mention -= 1
                    if mention == 0:
                        yield self._mention(text)
                        text = []
                elif kind in ("Characters", "SpaceCharacters"):
                    text.append(token["data"])
                continue
            if kind == "StartTag" and token["name"] in MENTION_TAGS and (None, MENTION_ATTRIBUTE) in token["data"]:
                mention = 1
                self.mentions += 1
                continue
            yield token
        if mention:  # unclosed mention at the end of the fragment
            yield self._mention(text)

    @staticmethod
    def _mention(text: list[str]) -> dict:
        # Re-escaped: the sanitiser reads `&name;` as the entity it is, and escapes a bare `<` itself.
        return {"type": "Characters", "data": _escape_text(_mention_text(_html.unescape("".join(text))))}


_EtreeWalker: Any = html5lib_shim.getTreeWalker("etree")  # a class built at run time by html5lib


# What JavaScript's String.prototype.trim() removes: DOMPurify trims every attribute value it keeps.
JS_WHITESPACE = (
    "\t\n\v\f\r \xa0\u1680" + "".join(map(chr, range(0x2000, 0x200B))) + "\u2028\u2029\u202f\u205f\u3000\ufeff"
)


class _TrimAttributeValues(html5lib_shim.Filter):
    """After sanitising: attribute values without leading/trailing whitespace (written or as a reference), as
    DOMPurify leaves them. Values are as written (entities kept), so only a value that needs it is decoded."""

    def __iter__(self):
        for token in super().__iter__():
            if token["type"] in ("StartTag", "EmptyTag") and token["data"]:
                for key, value in token["data"].items():
                    if value and (value[0] in JS_WHITESPACE or value[-1] in JS_WHITESPACE or "&" in value):
                        decoded = _html.unescape(value) if "&" in value else value
                        trimmed = decoded.strip(JS_WHITESPACE)
                        if trimmed != decoded:
                            token["data"][key] = trimmed
            yield token


class _LinearWalker(_EtreeWalker):
    """html5lib's etree walker finds a parent's position with list.count/index (quadratic on wide trees);
    this one carries the position along. Nodes: (element, index in parent, [(ancestor, its index)], flag)."""

    def getFirstChild(self, node):
        element, key, parents, flag = node if isinstance(node, tuple) else (node, None, [], None)
        if flag in ("text", "tail"):
            return None
        if element.text:
            return element, key, parents, "text"
        if len(element):
            parents.append((element, key))
            return element[0], 0, parents, None
        return None

    def getNextSibling(self, node):
        if not isinstance(node, tuple):
            return None
        element, key, parents, flag = node
        if flag == "text":  # after an element's text: its first child
            if len(element):
                parents.append((element, key))
                return element[0], 0, parents, None
            return None
        if element.tail and flag != "tail":
            return element, key, parents, "tail"
        if key < len(parents[-1][0]) - 1:
            return parents[-1][0][key + 1], key + 1, parents, None
        return None

    def getParentNode(self, node):
        element, key, parents, flag = node if isinstance(node, tuple) else (None, None, [], "root")
        if flag == "root":
            return None
        if flag == "text":
            return element if not parents else (element, key, parents, None)
        parent, parent_key = parents.pop()
        return parent if not parents else (parent, parent_key, parents, None)


class _Parser(html5lib_shim.BleachHTMLParser):
    """Keeps no parse errors: html5lib computes each one's line and column by rescanning its input chunk."""

    def parseError(self, errorcode="XXX-undefined-error", datavars=None):  # noqa: N802 (html5lib's name)
        pass


# script/style are "allowed" in the parser only, so that they arrive as elements (with their content) and
# _MentionAndCodeFilter drops them; bleach's parser would otherwise turn them into nothing and keep their content.
_PARSER = _Parser(
    tags=ALLOWED_TAGS | CONTENT_DROPPED_TAGS, strip=True, consume_entities=False, namespaceHTMLElements=False
)
# Always double quotes: bleach re-escapes `&` in a value it wrote in single quotes (one more `&amp;` a pass).
_SERIALIZER = html5lib_shim.BleachHTMLSerializer(
    quote_attr_values="always",
    use_best_quote_char=False,
    omit_optional_tags=False,
    escape_lt_in_attrs=True,
    resolve_entities=False,
    sanitize=False,
    alphabetical_attributes=False,
)


def _clean(text: str) -> tuple[str, int]:
    """One bleach pass (parse, mentions and code out, sanitise, serialise); the HTML and the mentions it replaced."""
    mentions = _MentionAndCodeFilter(_LinearWalker(_PARSER.parseFragment(text)))
    sanitised = BleachSanitizerFilter(
        source=mentions,
        allowed_tags=ALLOWED_TAGS,
        attributes=_allow_attribute,
        strip_disallowed_tags=True,
        strip_html_comments=True,
        css_sanitizer=None,
        allowed_protocols=ALLOWED_PROTOCOLS,
    )
    return _SERIALIZER.render(_TrimAttributeValues(sanitised)), mentions.mentions


# --------------------------------------------------------------------------- the fast path


def _screen_attribute(tag: str, name: str, value: str) -> str | None:
    # nh3 passes the value decoded; a value DOMPurify would trim is "changed", so the note takes the bleach path
    return value.strip(JS_WHITESPACE) if value_allowed(name, value) else None


_SAFE_SCREEN = nh3.Cleaner(
    tags=set(ALLOWED_TAGS),
    attributes={"*": set(ALLOWED_ATTRIBUTES)},
    url_schemes=set(ALLOWED_PROTOCOLS),
    attribute_filter=_screen_attribute,
    link_rel=None,
    strip_comments=True,
)
# A mention in the canonical shape CRM stored: no markup and no entity inside.
_SIMPLE_MENTION = re.compile(r'<(a|span)(?: href="[^"<>&]*")? data-user-id="\d+">([^<>&]*)</\1>')


_A_OPEN, _A_CLOSE = re.compile(r"<a[\s>]"), re.compile(r"</a>")


def _inside_a(text: str, at: int) -> bool:
    """Whether an `<a>` is still open at `at`: a mention anchor there would close it (HTML's adoption
    agency), which only the parser gets right."""
    return len(_A_OPEN.findall(text, 0, at)) > len(_A_CLOSE.findall(text, 0, at))


def _fast_path(text: str) -> NormalisedHtml | None:
    """The result without bleach when the (scrubbed, pre-scanned) note is already safe and canonical, else None."""
    out, mentions = text, 0
    if "data-" in text:
        matches = list(_SIMPLE_MENTION.finditer(text))
        if any(m.group(1) == "a" and _inside_a(text, m.start()) for m in matches):
            return None
        out, mentions = _SIMPLE_MENTION.subn(lambda m: _mention_text(m.group(2)), text)
    if MENTION_ATTRIBUTE in out or _SAFE_SCREEN.clean(out) != out:
        return None
    return NormalisedHtml(html=out, mentions=mentions, changed=out != text)


# --------------------------------------------------------------------------- the entry point


def normalise(raw: str | None, *, max_input_bytes: int = MAX_INPUT_BYTES) -> NormalisedHtml:
    """Sanitise one note body to its stable, allowlisted form; flatten it to text when that is out of reach.

    Raises InputTooLarge (before any parse) for a body over `max_input_bytes`; never raises for its content.
    """
    if not raw:
        return NormalisedHtml(html="", mentions=0, changed=bool(raw))
    if len(raw) > max_input_bytes or (len(raw) * 4 > max_input_bytes and utf8_size(raw) > max_input_bytes):
        raise InputTooLarge(f"raw HTML is {utf8_size(raw)} bytes, cap {max_input_bytes}")
    text = _prepare(raw)
    why = _prescan(text)
    if why is not None:
        return _flattened(raw, text, why)
    fast = _fast_path(text)
    if fast is not None:
        return NormalisedHtml(html=fast.html, mentions=fast.mentions, changed=fast.html != raw)
    return _bleach_fixpoint(raw, text)


def _bleach_fixpoint(raw: str, text: str) -> NormalisedHtml:
    current, mentions = text, 0
    for _ in range(_MAX_PASSES):
        cleaned, found = _clean(current)
        mentions += found
        if cleaned == current:
            return NormalisedHtml(html=cleaned, mentions=mentions, changed=cleaned != raw)
        if _prescan(cleaned) is not None:
            break
        # normalise(cleaned) would take the fast path and return it unchanged: a fixed point without a 2nd parse.
        fast = _fast_path(cleaned)
        if fast is not None and fast.html == cleaned:
            return NormalisedHtml(html=cleaned, mentions=mentions, changed=cleaned != raw)
        current = cleaned
    return _flattened(raw, text, f"sanitised HTML did not reach a fixed point in {_MAX_PASSES} passes")
