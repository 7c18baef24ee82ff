"""Digest messages: standard multipart MIME, deterministic bytes, hostile titles inert, folded subjects."""

from __future__ import annotations

import datetime as dt
import random
import textwrap
import unicodedata
from html.parser import HTMLParser
from typing import Any

import pytest

from pipelines.delivery.digests import message as message_module
from pipelines.delivery.digests.links import message_token, unsubscribe_token
from pipelines.delivery.digests.renderer import DigestRenderer
from pipelines.delivery.digests.schedule import SendSlot
from tests.pipelines.delivery.digests.digest_world import CONFIG, DS, UTC, item, parse


def bodies(raw: str) -> tuple[str, str]:
    msg = parse(raw)
    # The decoded parts keep the transport's CRLF line ends; compare text with plain newlines.
    text, html = (msg.get_body((kind,)).get_content() for kind in ("plain", "html"))
    return text.replace("\r\n", "\n"), html.replace("\r\n", "\n")


SLOT = SendSlot(dt.date(2026, 3, 8), dt.datetime(2026, 3, 8, 7, tzinfo=UTC))


def one_message(titles: list[str], user_id: str = "u01", **item_over: Any):
    shown = [item(f"i{n:02d}", title=title, **item_over) for n, title in enumerate(titles, start=1)]
    return DigestRenderer(DS, CONFIG).message(user_id, f"{user_id}@example.com", "daily", SLOT, shown)


class TagCollector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: set[str] = set()
        self.attrs: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        self.attrs.update(name for name, _ in attrs)


TEMPLATE_TAGS = {
    "html",
    "head",
    "meta",
    "title",
    "body",
    "div",
    "table",
    "tr",
    "td",
    "p",
    "span",
    "h1",
    "h2",
    "a",
    "br",
}


def test_message_is_standard_multipart_alternative() -> None:
    message = one_message(["First post", "Second post", "Third post"])
    assert message.raw.isascii()
    assert "\n" not in message.raw.replace("\r\n", "")  # CRLF line ends only
    msg = parse(message.raw)
    assert msg.get_content_type() == "multipart/alternative"
    parts = list(msg.iter_parts())
    assert [p.get_content_type() for p in parts] == ["text/plain", "text/html"]
    assert [p.get_content_charset() for p in parts] == ["utf-8", "utf-8"]
    assert msg["To"] == "u01@example.com"
    assert msg["From"] == "Nightfeed <digest@nightfeed.example>"
    assert msg["Date"] == "Sun, 08 Mar 2026 07:00:00 +0000"
    assert (
        msg["Message-ID"]
        == message.message_id
        == f"<digest.{DS}.{message_token(DS, 'u01')}@nightfeed.example>"
    )
    assert msg["Subject"] == "Your daily Nightfeed digest, Sun 8 Mar: First post"
    unsubscribe = f"https://nightfeed.example/unsubscribe?u=u01&t={unsubscribe_token('u01', DS, CONFIG)}"
    assert msg["List-Unsubscribe"] == f"<{unsubscribe}>"
    assert f"List-Unsubscribe: <{unsubscribe}>\r\n" in message.raw  # not RFC 2047-encoded
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    text, html = bodies(message.raw)
    for title in ["First post", "Second post", "Third post"]:
        assert title in text and title in html
    assert unsubscribe in text
    assert unsubscribe.replace("&", "&amp;") in html
    link = f"https://posts.example/i02?utm_source=nightfeed&utm_medium=email&utm_campaign=digest-{DS}&nf_mid="
    assert link + message_token(DS, "u01") in text
    assert message.item_ids == ("i01", "i02", "i03")


def test_message_bytes_are_deterministic() -> None:
    assert one_message(["A post"]).raw == one_message(["A post"]).raw
    assert one_message(["A post"]).message_id != one_message(["A post"], user_id="u02").message_id


HOSTILE = [
    ("<script>alert(1)</script>", "<script>alert(1)</script>", "&lt;script&gt;alert(1)&lt;/script&gt;"),
    (
        '<img src=x onerror="alert(1)">',
        '<img src=x onerror="alert(1)">',
        "&lt;img src=x onerror=&#34;alert(1)&#34;&gt;",
    ),
    ("Broken <b tag", "Broken <b tag", "Broken &lt;b tag"),
    ("Ctl\x00\x1b[31m\x7f\x85x\r\nInjected: yes", "Ctl[31m x Injected: yes", "Ctl[31m x Injected: yes"),
    ("abc\u202etxt.exe", "abctxt.exe", "abctxt.exe"),
    ("مرحبا بالعالم", "مرحبا بالعالم", "مرحبا بالعالم"),
    ("Rocket 🚀 for devs 👩‍💻", "Rocket 🚀 for devs 👩‍💻", "Rocket 🚀 for devs 👩‍💻"),
]


@pytest.mark.parametrize(("title", "as_text", "as_html"), HOSTILE)
def test_hostile_titles_render_inert(title: str, as_text: str, as_html: str) -> None:
    message = one_message(
        [title, "Calm post"], summary=title, tags=[title], source=title, url=f"https://x.example/{title}"
    )
    text, html = bodies(message.raw)
    assert f"1. {as_text}\n" in text
    assert f">{as_html}</a>" in html  # the title link
    assert (
        '<p dir="auto" style="margin:0 0 10px 0;font-size:15px;line-height:22px;color:#374151;">'
        f"{as_html}</p>" in html
    )
    collector = TagCollector()
    collector.feed(html)
    assert collector.tags <= TEMPLATE_TAGS
    assert not [a for a in collector.attrs if a.startswith("on")]
    for body in (text, html):
        assert not [c for c in body if unicodedata.category(c) == "Cc" and c != "\n"]
        assert "\u202e" not in body
    assert parse(message.raw)["Subject"] == f"Your daily Nightfeed digest, Sun 8 Mar: {as_text}"


def test_long_international_subject_folds_and_round_trips() -> None:
    title = "Ünïcødé 🚀 שלום עולם and مرحبا in one very long headline about compilers and more"
    message = one_message([title])
    # 80 characters, 70 allowed in a subject: room for 69 plus "…"; character 69 is inside "compilers",
    # so the cut goes back to the space after "about".
    expected = (
        "Your daily Nightfeed digest, Sun 8 Mar: "
        "Ünïcødé 🚀 שלום עולם and مرحبا in one very long headline about…"
    )
    assert message.subject == expected
    head = message.raw.split("\r\n\r\n", 1)[0]
    subject_lines = head.split("Subject:", 1)[1].split("\r\nDate:", 1)[0].split("\r\n")
    assert len(subject_lines) > 1
    # Lines stay within 78 characters; List-Unsubscribe may not (RFC 5322 allows up to 998), because
    # its URL must stay whole for mail clients.
    assert [line for line in head.split("\r\n") if len(line) > 78] == [
        line for line in head.split("\r\n") if line.startswith("List-Unsubscribe: <https://")
    ]
    assert parse(message.raw)["Subject"] == expected


def test_cleaned_text_wraps_as_textwrap_wraps_it() -> None:
    rng = random.Random(15)
    words = ["a", "post", "ünïcødé", "🚀", "שלום", "x" * 80, "end.", "-", "co-op", "\u00a0nbsp", "\u3000"]
    for _ in range(500):
        text = " ".join(rng.choices(words, k=rng.randint(1, 40)))
        text = rng.choice([text, f" {text}", text.replace(" ", "  ", 1), text.replace(" ", "\t", 1)])
        expected = textwrap.fill(
            text,
            width=76,
            initial_indent="   ",
            subsequent_indent="   ",
            break_long_words=False,
            break_on_hyphens=False,
        )
        assert message_module._wrap(text) == expected, text
