"""One digest's content: the posts as shown, the message record, the templates and the config checks.

A post is shown with cleaned text and a tracked link whose message token is still a hole
(:func:`digest_item`); ``templates/digest_post.{txt,html}.j2`` render one post (the HTML one after its
row's opening, ``digest_post_start.html.j2``) and ``templates/digest.{txt,html}.j2`` the body around the
posts (:mod:`.renderer` puts them together into the MIME message of :mod:`.mime`).
Message-ID, Date (the send time) and the MIME boundary are functions of ``ds`` and the user, so a rerun
writes identical bytes. The unsubscribe link is in the footer and in ``List-Unsubscribe`` with
``List-Unsubscribe-Post: List-Unsubscribe=One-Click``; the signing MTA must cover both headers in DKIM.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
import textwrap
from dataclasses import dataclass
from email import policy as email_policy
from email.headerregistry import Address
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jinja2

from pipelines.core.errors import UserError
from pipelines.core.settings import LOCAL_UNSUBSCRIBE_SECRET, DigestConfig
from pipelines.delivery.digests.links import tracked_link_parts
from pipelines.delivery.digests.mime import MimeTemplate, mime_template
from pipelines.delivery.digests.stencil import hole
from pipelines.delivery.digests.text import clean_text, excerpt

TEMPLATES_DIR = Path(__file__).resolve().parent.parent / "templates"
MAX_TAGS = 5
SUBJECT_TITLE_CHARS = 70
# The holes of a shown post (stencil slots 0 and 1): its digest's message token, its number in the digest.
TOKEN_HOLE, NUMBER_HOLE = hole(0), hole(1)

_WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


@dataclass(frozen=True)
class DigestItem:
    """One post as shown in a digest: every field already cleaned; ``link`` carries tracking, with
    ``TOKEN_HOLE`` in place of the message token."""

    item_id: str
    title: str
    excerpt: str
    tags: tuple[str, ...]
    source: str
    link: str


@dataclass(frozen=True)
class DigestMessage:
    """One rendered digest: the complete RFC 5322 message (``raw``, ASCII, CRLF) and what it holds."""

    user_id: str
    to: str
    message_id: str
    subject: str
    item_ids: tuple[str, ...]
    send_at: dt.datetime
    local_send_date: dt.date
    raw: str

    def record(self) -> dict[str, Any]:
        """The JSON Lines object of this message."""
        return {
            "user_id": self.user_id,
            "to": self.to,
            "message_id": self.message_id,
            "subject": self.subject,
            "item_ids": list(self.item_ids),
            "send_at": self.send_at.isoformat(),
            "local_send_date": self.local_send_date.isoformat(),
            "raw": self.raw,
        }


def digest_item(record: dict[str, Any], ds: dt.date, config: DigestConfig) -> DigestItem:
    """A :class:`DigestItem` from one items-table row (a dict with ``ITEM_COLUMNS``); its link holds
    ``TOKEN_HOLE`` where each digest writes its message token."""
    tags: dict[str, None] = {}  # a set that keeps the order
    for tag in record.get("tags") or []:
        cleaned = clean_text(tag)
        if cleaned:
            tags[cleaned] = None
    item_id = record["item_id"]
    return DigestItem(
        item_id=item_id,
        title=excerpt(clean_text(record.get("title")), 200) or "Untitled post",
        excerpt=excerpt(clean_text(record.get("summary")), config.summary_chars),
        tags=tuple(tags)[:MAX_TAGS],
        source=clean_text(record.get("source")),
        link=TOKEN_HOLE.join(tracked_link_parts(record.get("url"), item_id, ds, config.base_url)),
    )


def _wrap(text: str, indent: str = "   ", width: int = 76) -> str:
    """``text`` filled to ``width`` with ``indent``, long words whole, as ``textwrap.fill`` does.

    Cleaned text (:func:`clean_text`: words and single spaces) is filled greedily here, which gives the
    same lines at a fraction of the cost; any other text goes to ``textwrap``.
    """
    if text and text.split(" ") == text.split():  # single spaces between words, no other whitespace
        return "\n".join(indent + line for line in _line_pattern(width - len(indent)).findall(text))
    return textwrap.fill(
        text,
        width=width,
        initial_indent=indent,
        subsequent_indent=indent,
        break_long_words=False,
        break_on_hyphens=False,
    )


@functools.lru_cache(maxsize=8)
def _line_pattern(room: int) -> re.Pattern[str]:
    """A line of at most ``room`` characters filled greedily with whole words (the longest run of words
    that fits, or one longer word alone), and the space after it."""
    return re.compile(f"(.{{1,{room}}}|[^ ]+)(?: |$)")


@functools.lru_cache(maxsize=1)
def digest_templates() -> jinja2.Environment:
    """The Jinja environment of the digest templates (the HTML ones autoescaped, a ``wrap`` filter)."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES_DIR),
        autoescape=lambda name: bool(name) and name.endswith(".html.j2"),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        auto_reload=False,  # package files: no file system check on every get_template
    )
    env.filters["wrap"] = _wrap
    # The templates call none of Jinja's globals (range, dict, cycler, ...); without them a render's
    # context holds only the values passed, which makes each of the thousands of post renders cheaper.
    env.globals.clear()
    return env


def date_label(day: dt.date) -> str:
    """``Tue 10 Mar``: English and independent of the machine's locale, so output is reproducible."""
    return f"{_WEEKDAYS[day.weekday()]} {day.day} {_MONTHS[day.month - 1]}"


class DigestConfigError(UserError, ValueError):
    """The digest settings would produce broken or forgeable messages; the message names the setting."""


@functools.lru_cache(maxsize=8)
def sender_template(sender: str) -> MimeTemplate:
    """The MIME template of the digests from ``sender``.

    Raises:
        DigestConfigError: ``sender`` is not one address with a domain.
    """
    return mime_template(_sender_address(sender))


def _sender(config: DigestConfig) -> Address:
    return _sender_address(config.sender)


@functools.lru_cache(maxsize=8)
def _sender_address(sender: str) -> Address:
    header = email_policy.default.header_factory("from", sender)
    addresses = header.addresses
    if header.defects or len(addresses) != 1 or not addresses[0].domain:
        raise DigestConfigError(
            f"DigestConfig.sender must be one address like 'Name <a@b.example>', got {sender!r}"
        )
    return addresses[0]


def check_config(config: DigestConfig) -> None:
    """Fail early on a config that would produce broken messages or forgeable unsubscribe links.

    Raises:
        DigestConfigError: the sender is not one address, a URL setting is not an absolute https URL
            (RFC 8058 requires https for one-click unsubscribe), or production mode would sign or accept
            unsubscribe tokens with the built-in secret, which anyone can read.
    """
    _sender(config)
    for name in ("base_url", "unsubscribe_url"):
        value = getattr(config, name)
        parts = urlsplit(value)
        if parts.scheme != "https" or not parts.netloc or parts.query or parts.fragment:
            raise DigestConfigError(f"DigestConfig.{name} must be an https URL without query, got {value!r}")
    if config.production and LOCAL_UNSUBSCRIBE_SECRET in config.verification_keys().values():
        raise DigestConfigError(
            "production mode refuses to render digests with the built-in digest.unsubscribe_secret: anyone "
            "could mint unsubscribe links with it",
            hint="set NIGHTFEED_DIGEST__UNSUBSCRIBE_SECRET to a random value, e.g. `openssl rand -hex 32` "
            "(docker compose: NIGHTFEED_UNSUBSCRIBE_SECRET in .env)",
        )
