"""The normaliser: Rails-equal allowlist, mentions, no <p> wrapping, idempotence, XSS corpus."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from selectolax.lexbor import LexborHTMLParser

from notes_migration.html import ALLOWED_ATTRIBUTES, ALLOWED_PROTOCOLS, ALLOWED_TAGS, normalise

VECTORS = [
    line
    for line in (Path(__file__).parents[1] / "fixtures" / "xss_vectors.txt").read_text().splitlines()
    if line.strip() and not line.startswith("# ")
]
URL_ATTRIBUTES = {"href", "src", "cite", "action", "formaction", "background", "lowsrc", "dynsrc", "xlink:href"}
_CONTROL = re.compile(r"[\x00-\x20\x7f]+")


def url_scheme(value: str) -> str | None:
    """The scheme a browser would see: control characters and whitespace are ignored (WHATWG URL)."""
    v = _CONTROL.sub("", value)
    m = re.match(r"^([a-zA-Z][a-zA-Z0-9+.\-]*):", v)
    return m.group(1).lower() if m else None


def browser_view_violations(html: str) -> list[str]:
    """Re-parse as a browser would (Lexbor, a WHATWG HTML5 parser) and list anything outside the allowlist."""
    tree = LexborHTMLParser(f"<!doctype html><html><head></head><body>{html}</body></html>")
    problems = []
    for node in tree.body.traverse(include_text=False):
        if node.tag in ("body", "-comment"):
            if node.tag == "-comment":
                problems.append("comment")
            continue
        if node.tag not in ALLOWED_TAGS:
            problems.append(f"tag {node.tag}")
        for name, value in node.attributes.items():
            if name not in ALLOWED_ATTRIBUTES:
                problems.append(f"attribute {node.tag}[{name}]")
            if name in URL_ATTRIBUTES and value is not None:
                scheme = url_scheme(value)
                if scheme is not None and scheme not in ALLOWED_PROTOCOLS:
                    problems.append(f"scheme {scheme} in {node.tag}[{name}]")
    if tree.head and tree.head.child is not None:
        problems.append("content hoisted into <head>")
    return problems


@pytest.mark.parametrize("vector", VECTORS)
def test_xss_corpus_output_holds_only_allowlisted_markup(vector):
    out = normalise(vector).html
    assert browser_view_violations(out) == [], out
    assert normalise(out).html == out  # idempotent on hostile input too


def test_corpus_is_not_trivially_empty():
    assert len(VECTORS) >= 100
    # The checker itself must be able to fail:
    assert browser_view_violations('<img src=x onerror="alert(1)">') == ["attribute img[onerror]"]
    assert browser_view_violations('<a href=" java\tscript:alert(1)">x</a>') == ["scheme javascript in a[href]"]


@pytest.mark.parametrize(
    "raw, expected",
    [
        ('<div>Hi <a href="/users/5" data-user-id="5">@Jane Doe</a>!</div>', "<div>Hi @Jane Doe!</div>"),
        ('<div>cc <span data-user-id="7">Bob Smith</span></div>', "<div>cc @Bob Smith</div>"),
        ('<span data-user-id="7">  @@Bob\n  Smith </span>', "@Bob Smith"),
        ('<a data-user-id="8"><strong>Ana</strong> &amp; co</a>', "@Ana &amp; co"),
        ('<a data-user-id="9"></a>', "@[Legacy CRM User]"),
        ('<a href="https://x.example/p">link</a>', '<a href="https://x.example/p">link</a>'),
    ],
)
def test_mentions_become_plain_at_name_text(raw, expected):
    result = normalise(raw)
    assert result.html == expected
    assert "data-user-id" not in result.html


def test_mention_count_is_reported():
    assert normalise('<a data-user-id="1">A</a> <span data-user-id="2">B</span>').mentions == 2


@pytest.mark.parametrize(
    "safe",
    [
        "<div>Called about the renewal; follow up next week.</div>",
        "<div><strong>Budget:</strong> €12,500</div>",
        "<ul><li>Send the quote</li><li>Book the site visit</li></ul>",
        "<div>Notas 😀 — 日本語のメモ — Привет — مرحبا</div>",
        "<h1>Visit report</h1><div>Line one<br>line two &amp; three</div>",
        "<blockquote>They asked for &lt;net 30&gt; terms.</blockquote>",
        '<div>See <a href="https://example.com/offer?id=7&amp;v=2">the offer</a>.</div>',
        "<p>already a paragraph</p>",
        '<img src="https://img.example/a.png" alt="a" width="10" height="10">',
        "<div>non&nbsp;breaking</div>",
    ],
)
def test_already_safe_markup_is_kept_as_it_is(safe):
    result = normalise(safe)
    assert result.html == safe
    assert not result.changed


@pytest.mark.parametrize("raw", ["plain text", "line<br>two", "<div>x</div>", "text <b>bold</b>"])
def test_no_paragraph_wrapping(raw):
    assert "<p>" not in normalise(raw).html


def test_empty_and_null_notes():
    assert normalise(None).html == ""
    assert normalise("").html == ""


def test_disallowed_markup_is_stripped_not_escaped_away():
    out = normalise('<p style="color:red" onclick="x()">Legacy <u>underline</u> <font color="red">f</font></p>').html
    assert out == "<p>Legacy underline f</p>"


html_fragments = st.recursive(
    st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12),
    lambda inner: st.builds(
        lambda tag, attr, val, body: f'<{tag} {attr}="{val}">{body}</{tag}>',
        st.sampled_from(["a", "span", "div", "p", "script", "img", "u", "b", "style", "svg", "math", "table"]),
        st.sampled_from(["href", "src", "data-user-id", "onclick", "class", "title", "style"]),
        st.sampled_from(["javascript:alert(1)", "https://x.example", "7", "a&amp;b", '"><x', "x"]),
        st.lists(inner, max_size=3).map("".join),
    ),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(html_fragments)
def test_normalise_is_idempotent_and_safe(fragment):
    once = normalise(fragment).html
    assert normalise(once).html == once
    assert browser_view_violations(once) == []


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_normalise_is_idempotent_on_arbitrary_text(text):
    once = normalise(text).html
    assert normalise(once).html == once


# --- the fast path must never disagree with bleach where it applies ----------------------------

from notes_migration.html import _bleach_fixpoint, _fast_path  # noqa: E402


def _agree(raw: str) -> bool:
    fast = _fast_path(raw)
    return fast is None or (fast.html == _bleach_fixpoint(raw).html and fast.mentions == _bleach_fixpoint(raw).mentions)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(html_fragments)
def test_fast_path_agrees_with_bleach_on_generated_markup(fragment):
    assert _agree(fragment)


def test_fast_path_agrees_with_bleach_on_the_seed_corpus_and_vectors():
    import random

    from tests.support.seed import note_html

    rng = random.Random(7)
    users = [(1, "Ana Silva"), (2, "Léa O'Brien"), (3, "日本 太郎")]
    corpus = [note_html(rng, users) or "" for _ in range(1500)] + VECTORS
    taken = [raw for raw in corpus if raw and _fast_path(raw) is not None]
    assert len(taken) > 500  # the fast path is really exercised
    assert [raw for raw in corpus if not _agree(raw)] == []


@pytest.mark.parametrize(
    "raw",
    [
        '<a href="/u/1" data-user-id="1">@Ana</a><script>x</script>',  # simple mention, unsafe rest
        '<a href="javascript:x" data-user-id="1">Ana</a>',  # unsafe href inside a mention
        '<span data-user-id="1">A &amp; B</span>',  # entity inside: left to bleach
        "<div>unclosed",  # bleach balances tags; nh3 too, so the screen refuses it
    ],
)
def test_fast_path_refuses_what_needs_bleach(raw):
    assert _fast_path(raw) is None or _fast_path(raw).html == _bleach_fixpoint(raw).html
