"""The digests of one run date, rendered from parts that many digests share.

A shard's digests show a few thousand posts to many users. Each post is rendered (the
``digest_post`` templates) and quoted-printable encoded once, into stencils whose holes take the message
token of its links (:mod:`.stencil`; the text block per number of the post); the body around the posts
(the ``digest`` templates) once per frequency, day and post count, with the lines holding the subject, the
preheader or the unsubscribe link completed per message (:mod:`.shell`). Quoted-printable encodes line by
line, so the whole lines put together are, byte for byte, the encoded body of the templates' text. Posts
are cached by id and every field shown, in a bounded LRU cache.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import gc
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from email.utils import format_datetime
from typing import Any

from markupsafe import escape

from pipelines.core.settings import DigestConfig
from pipelines.delivery.digests.addresses import is_valid_email
from pipelines.delivery.digests.links import MAC_CHARS, UnsubscribeLinks, message_token
from pipelines.delivery.digests.message import (
    NUMBER_HOLE,
    SUBJECT_TITLE_CHARS,
    DigestItem,
    DigestMessage,
    date_label,
    digest_item,
    digest_templates,
    sender_template,
)
from pipelines.delivery.digests.mime import BOUNDARY_TOKEN_CHARS, boundary
from pipelines.delivery.digests.quoted_printable import escaped, quoted_printable
from pipelines.delivery.digests.schedule import SendSlot
from pipelines.delivery.digests.shell import POSTS, PREHEADER, SUBJECT, UNSUBSCRIBE, Shell, shell
from pipelines.delivery.digests.stencil import Stencil, fill_holes, hole, stencil
from pipelines.delivery.digests.text import excerpt

POST_CACHE_SIZE = 30_000  # posts; a 250k-user candidates shard of the 1M-user world shows ~21k
VALUE_CACHE_SIZE = 32_768  # escaped subjects and titles
_PREHEADER_TITLES = slice(1, 4)  # the titles after the first, as the preheader shows them
_PREHEADER_SEPARATOR = " · "
RENDERING_GC_THRESHOLD = 100_000  # allocations between two collections of the youngest generation


@contextlib.contextmanager
def few_collections(threshold: int = RENDERING_GC_THRESHOLD) -> Iterator[None]:
    """Run the block with the cyclic garbage collector's first threshold raised to ``threshold``.

    Rendering makes almost no reference cycles (72 objects were collected over the 50,000 digests of
    ``bench/bench_digests.py``), and every object it frees goes with its last reference. But it allocates
    millions of objects, and the post cache keeps thousands alive: at the default threshold (700) the
    collector ran 1,251 times there, each older-generation pass walking the whole cache, for about 6% of the
    CPU. Cycles made in the block are still collected, less often. The old thresholds are restored after.
    """
    before = gc.get_threshold()
    gc.set_threshold(threshold, *before[1:])
    try:
        yield
    finally:
        gc.set_threshold(*before)


class RenderedPost:
    """One post as every digest of a run shows it, with its blocks as stencils with holes for the message
    token, each rendered when first needed: the text block per number of the post (encoded once per
    width of the number, with a hole for it), the HTML block after its row's opening (which depends only
    on whether the post comes first)."""

    def __init__(self, item: DigestItem) -> None:
        self.item = item
        self._numbered: dict[int, Stencil] = {}
        self._text: dict[str, Stencil] = {}
        self._html: Stencil | None = None

    def text(self, number: str) -> Stencil:
        """The text block of this post as post ``number``."""
        block = self._text.get(number)
        if block is None:
            numbered = self._numbered.get(len(number))
            if numbered is None:
                numbered = self._numbered[len(number)] = stencil(
                    _text_block(self.item), (BOUNDARY_TOKEN_CHARS, len(number))
                )
            block = self._text[number] = numbered.with_value(1, number)
        return block

    def html(self) -> Stencil:
        """The HTML block of this post after its row's opening."""
        if self._html is None:
            self._html = stencil(_html_post(self.item), (BOUNDARY_TOKEN_CHARS,))
        return self._html


class DigestRenderer:
    """Renders the digests of ``ds`` with ``config``, reusing the posts and bodies digests share.

    ``seconds`` holds the CPU time spent per step (``posts``, ``bodies``, ``mime``); ``cache_info()`` the
    hits and misses of the post cache.
    """

    def __init__(self, ds: dt.date, config: DigestConfig, post_cache_size: int = POST_CACHE_SIZE) -> None:
        self.ds = ds
        self.config = config
        self.seconds: Counter[str] = Counter()
        self._post = functools.lru_cache(maxsize=post_cache_size)(self._render_post)
        self._shells = functools.lru_cache(maxsize=256)(self._render_shells)
        self._date = functools.lru_cache(maxsize=256)(format_datetime)
        # Escaped per-message values: subjects repeat (same frequency, day and top post), and so do the
        # titles a preheader is made of.
        self._escaped_text = functools.lru_cache(maxsize=VALUE_CACHE_SIZE)(escaped)
        self._escaped_html = functools.lru_cache(maxsize=VALUE_CACHE_SIZE)(_escaped_html)
        self._unsubscribe = UnsubscribeLinks(ds, config)
        self._row_start = functools.lru_cache(maxsize=2)(_encoded_row_start)
        # The unsubscribe lines as stencils, by line and width of the quoted user id.
        self._link_line = functools.lru_cache(maxsize=256)(stencil)

    def cache_info(self) -> functools._CacheInfo:
        """Hits, misses and size of the post cache."""
        return self._post.cache_info()

    def message(
        self,
        user_id: str,
        address: str,
        frequency: str,
        slot: SendSlot,
        records: Sequence[dict[str, Any]],
    ) -> DigestMessage:
        """The multipart/alternative RFC 5322 message of one digest.

        Args:
            user_id: the recipient's id (for the message token and the unsubscribe link).
            address: the recipient's e-mail address.
            frequency: ``daily`` or ``weekly``, as the text tells the reader.
            slot: the send slot; its instant is the Date header.
            records: the posts, best first: items-table rows (dicts with ``ITEM_COLUMNS``).

        Returns:
            The message; ``raw`` is pure ASCII (quoted-printable UTF-8 bodies, RFC 2047 headers).

        Raises:
            ValueError: bad address, no posts, or a bad sender in the config.
        """
        if not is_valid_email(address):
            raise ValueError(f"user {user_id!r}: {address!r} is not a valid e-mail address")
        if not records:
            raise ValueError(f"digest of user {user_id!r} for ds {self.ds} has no items")
        started = time.process_time()
        posts = [self._cached_post(record) for record in records]
        token = message_token(self.ds, user_id)
        values = (token,)
        text_posts = [post.text(str(n)).fill(values) for n, post in enumerate(posts, start=1)]
        later_start = self._row_start(False)
        html_posts = []
        for post in posts:
            html_posts += (later_start, post.html().fill(values))
        html_posts[0] = self._row_start(True)
        posts_done = time.process_time()

        user, mac = link_parts = self._unsubscribe.parts(user_id)
        link = f"{self._unsubscribe.before}{user}{self._unsubscribe.between}{mac}"
        titles = [post.item.title for post in posts]
        subject = self._subject(frequency, slot, titles[0])
        text_shell, html_shell = self._shells(frequency, date_label(slot.local_date), len(posts))
        widths = (len(user), MAC_CHARS)

        def link_line(line: str) -> str:
            return self._link_line(line, widths).fill(link_parts)

        def value(escape_value: Callable[[str], str]) -> Callable[[str], str]:
            def escaped_value(marker: str) -> str:
                if marker == PREHEADER:  # escaped title by title: titles repeat, preheaders seldom
                    titles_shown = titles[_PREHEADER_TITLES]
                    return escape_value(_PREHEADER_SEPARATOR).join(map(escape_value, titles_shown))
                return escape_value({SUBJECT: subject, UNSUBSCRIBE: link}[marker])

            return escaped_value

        text = text_shell.encode(value(self._escaped_text), text_posts, link_line)
        html = html_shell.encode(value(self._escaped_html), html_posts, link_line)
        bodies_done = time.process_time()

        template = sender_template(self.config.sender)
        message_id = f"<digest.{self.ds}.{token}@{template.sender.domain}>"
        raw = template.render(address, subject, self._date(slot.send_at), message_id, link, token, text, html)
        if raw.count(f"--{boundary(token)}") != 3:
            raise RuntimeError(f"MIME boundary of the digest of user {user_id!r} occurs inside a part")
        message = DigestMessage(
            user_id=user_id,
            to=address,
            message_id=message_id,
            subject=subject,
            item_ids=tuple(post.item.item_id for post in posts),
            send_at=slot.send_at,
            local_send_date=slot.local_date,
            raw=raw,
        )
        done = time.process_time()
        seconds = self.seconds
        seconds["posts"] += posts_done - started
        seconds["bodies"] += bodies_done - posts_done
        seconds["mime"] += done - bodies_done
        return message

    def bodies(
        self, user_id: str, frequency: str, slot: SendSlot, records: Sequence[dict[str, Any]]
    ) -> tuple[str, str, str]:
        """Subject, plain-text body and HTML body of one digest, rendered afresh (no cache).

        Raises:
            ValueError: ``records`` is empty.
        """
        if not records:
            raise ValueError(f"digest of user {user_id!r} for ds {self.ds} has no items")
        items = [digest_item(record, self.ds, self.config) for record in records]
        token = message_token(self.ds, user_id)
        link = self._unsubscribe.link(user_id)
        titles = [item.title for item in items]
        subject = self._subject(frequency, slot, titles[0])
        texts = {
            SUBJECT: subject,
            PREHEADER: _PREHEADER_SEPARATOR.join(titles[_PREHEADER_TITLES]),
            UNSUBSCRIBE: link,
        }
        text_shell, html_shell = self._shell_texts(frequency, date_label(slot.local_date), len(items))
        numbered = list(enumerate(items, start=1))
        text_posts = "".join(fill_holes(_text_block(item), (token, str(n))) for n, item in numbered)
        html_posts = "".join(fill_holes(_html_block(item, n == 1), (token,)) for n, item in numbered)
        html_values = {name: str(escape(value)) for name, value in texts.items()}
        return (
            subject,
            _fill(text_shell.replace(POSTS, text_posts), texts),
            _fill(html_shell.replace(POSTS, html_posts), html_values),
        )

    def _subject(self, frequency: str, slot: SendSlot, first_title: str) -> str:
        title = excerpt(first_title, SUBJECT_TITLE_CHARS)
        return f"Your {frequency} Nightfeed digest, {date_label(slot.local_date)}: {title}"

    def _cached_post(self, record: dict[str, Any]) -> RenderedPost:
        tags = record.get("tags")
        return self._post(
            record["item_id"],
            record.get("title"),
            record.get("summary"),
            tuple(tags) if tags else (),
            record.get("source"),
            record.get("url"),
        )

    def _render_post(
        self,
        item_id: str,
        title: str | None,
        summary: str | None,
        tags: tuple[str, ...],
        source: str | None,
        url: str | None,
    ) -> RenderedPost:
        record = dict(item_id=item_id, title=title, summary=summary, tags=tags, source=source, url=url)
        return RenderedPost(digest_item(record, self.ds, self.config))

    def _shell_texts(self, frequency: str, label: str, count: int) -> tuple[str, str]:
        """The text and HTML bodies around the posts, with markers for the posts and per-message values."""
        context = {
            "subject": SUBJECT,
            "date_label": label,
            "frequency": frequency,
            "count": count,
            "posts": POSTS,
            "preheader": PREHEADER,
            "unsubscribe_link": UNSUBSCRIBE,
            "preferences_url": f"{self.config.base_url.rstrip('/')}/settings/digest",
            "home_url": self.config.base_url,
        }
        env = digest_templates()
        return (
            env.get_template("digest.txt.j2").render(context),
            env.get_template("digest.html.j2").render(context),
        )

    def _render_shells(self, frequency: str, label: str, count: int) -> tuple[Shell, Shell]:
        text, html = self._shell_texts(frequency, label, count)
        before, between = self._unsubscribe.before, self._unsubscribe.between
        # The quoted user id and the MAC hold no character HTML escapes, so only the rest is escaped.
        html_link = f"{escape(before)}{hole(0)}{escape(between)}{hole(1)}"
        return shell(text, f"{before}{hole(0)}{between}{hole(1)}"), shell(html, html_link)


def _text_block(item: DigestItem) -> str:
    """The text block of a shown post, with holes for the message token and its number."""
    return digest_templates().get_template("digest_post.txt.j2").render(item=item, index=NUMBER_HOLE)


def _html_block(item: DigestItem, first: bool) -> str:
    """The HTML block of a shown post, with holes for the message token."""
    return _html_row_start(first) + _html_post(item)


def _html_row_start(first: bool) -> str:
    """The opening lines of a post's row, which differ for the first post only."""
    start = digest_templates().get_template("digest_post_start.html.j2").render(first=first)
    if not start.endswith("\n"):
        raise RuntimeError("digest_post_start.html.j2 must render whole lines")
    return start


def _html_post(item: DigestItem) -> str:
    """The HTML block of a shown post after its row's opening, with holes for the message token."""
    return digest_templates().get_template("digest_post.html.j2").render(item=item)


def _encoded_row_start(first: bool) -> str:
    return quoted_printable(_html_row_start(first))


def _fill(text: str, values: Mapping[str, str]) -> str:
    for name, value in values.items():
        text = text.replace(name, value)
    return text


def _escaped_html(value: str) -> str:
    return escaped(str(escape(value)))
