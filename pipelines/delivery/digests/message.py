"""One digest as an RFC 5322 message: the posts shown, the text and HTML bodies, the headers.

Renders ``templates/digest.txt.j2`` and the autoescaped ``templates/digest.html.j2`` into a
multipart/alternative message: quoted-printable UTF-8 bodies, CRLF line ends, headers folded at 78.
Message-ID, Date (the send time) and the MIME boundary are functions of ``ds`` and the user, so a rerun
writes identical bytes. The unsubscribe link is in the footer and in ``List-Unsubscribe`` with
``List-Unsubscribe-Post: List-Unsubscribe=One-Click``; the signing MTA must cover both headers in DKIM.
"""

from __future__ import annotations

import datetime as dt
import functools
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from email import policy as email_policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jinja2

from pipelines.core.errors import UserError
from pipelines.core.settings import LOCAL_UNSUBSCRIBE_SECRET, DigestConfig
from pipelines.delivery.digests.addresses import is_valid_email
from pipelines.delivery.digests.links import message_token, tracked_link, unsubscribe_link
from pipelines.delivery.digests.schedule import SendSlot
from pipelines.delivery.digests.text import clean_text, excerpt

TEMPLATES_DIR = Path(__file__).resolve().parent.parent / "templates"
MAX_TAGS = 5
SUBJECT_TITLE_CHARS = 70

# Policy of the written messages: SMTP line ends (CRLF), headers folded at 78. ``refold_source="none"``
# keeps the headers set with ``set_raw`` (List-Unsubscribe) as written: Python would otherwise turn a
# long URL into RFC 2047 encoded-words, which mail clients do not decode in that header.
MESSAGE_POLICY = email_policy.SMTP.clone(refold_source="none")

_WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


@dataclass(frozen=True)
class DigestItem:
    """One post as shown in a digest: every field already cleaned; ``link`` carries tracking."""

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


def digest_item(record: dict[str, Any], ds: dt.date, token: str, config: DigestConfig) -> DigestItem:
    """A :class:`DigestItem` from one items-table row (a dict with ``ITEM_COLUMNS``)."""
    tags: list[str] = []
    for tag in record.get("tags") or []:
        cleaned = clean_text(tag)
        if cleaned and cleaned not in tags:
            tags.append(cleaned)
    item_id = record["item_id"]
    return DigestItem(
        item_id=item_id,
        title=excerpt(clean_text(record.get("title")), 200) or "Untitled post",
        excerpt=excerpt(clean_text(record.get("summary")), config.summary_chars),
        tags=tuple(tags[:MAX_TAGS]),
        source=clean_text(record.get("source")),
        link=tracked_link(record.get("url"), item_id, ds, token, config.base_url),
    )


def _wrap(text: str, indent: str = "   ", width: int = 76) -> str:
    return textwrap.fill(
        text,
        width=width,
        initial_indent=indent,
        subsequent_indent=indent,
        break_long_words=False,
        break_on_hyphens=False,
    )


@functools.lru_cache(maxsize=1)
def _templates() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES_DIR),
        autoescape=lambda name: bool(name) and name.endswith(".html.j2"),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["wrap"] = _wrap
    return env


def date_label(day: dt.date) -> str:
    """``Tue 10 Mar``: English and independent of the machine's locale, so output is reproducible."""
    return f"{_WEEKDAYS[day.weekday()]} {day.day} {_MONTHS[day.month - 1]}"


class DigestConfigError(UserError, ValueError):
    """The digest settings would produce broken or forgeable messages; the message names the setting."""


def _sender(config: DigestConfig) -> Address:
    header = email_policy.default.header_factory("from", config.sender)
    addresses = header.addresses
    if header.defects or len(addresses) != 1 or not addresses[0].domain:
        raise DigestConfigError(
            f"DigestConfig.sender must be one address like 'Name <a@b.example>', got {config.sender!r}"
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


def render_bodies(
    ds: dt.date,
    user_id: str,
    frequency: str,
    slot: SendSlot,
    items: Sequence[DigestItem],
    config: DigestConfig,
) -> tuple[str, str, str]:
    """Subject, plain-text body and HTML body of one digest.

    Raises:
        ValueError: ``items`` is empty.
    """
    if not items:
        raise ValueError(f"digest of user {user_id!r} for ds {ds} has no items")
    label = date_label(slot.local_date)
    subject = f"Your {frequency} Nightfeed digest, {label}: {excerpt(items[0].title, SUBJECT_TITLE_CHARS)}"
    context = {
        "subject": subject,
        "date_label": label,
        "frequency": frequency,
        "items": items,
        "preheader": " · ".join(item.title for item in items[1:4]),
        "unsubscribe_link": unsubscribe_link(user_id, ds, config),
        "preferences_url": f"{config.base_url.rstrip('/')}/settings/digest",
        "home_url": config.base_url,
    }
    env = _templates()
    text = env.get_template("digest.txt.j2").render(context)
    html = env.get_template("digest.html.j2").render(context)
    return subject, text, html


def render_message(
    ds: dt.date,
    user_id: str,
    address: str,
    frequency: str,
    slot: SendSlot,
    items: Sequence[DigestItem],
    config: DigestConfig,
) -> DigestMessage:
    """Build the multipart/alternative RFC 5322 message of one digest.

    Args:
        ds: run date; with ``user_id`` it fixes the Message-ID and MIME boundary.
        user_id: the recipient's id (for the unsubscribe token).
        address: the recipient's e-mail address.
        frequency: ``daily`` or ``weekly``, as the text tells the reader.
        slot: the send slot; its instant is the Date header.
        items: the posts, best first (links already built with :func:`message_token` of ds and user).
        config: digest settings.

    Returns:
        The message; ``raw`` is pure ASCII (quoted-printable UTF-8 bodies, RFC 2047 headers).

    Raises:
        ValueError: bad address, no items, or a bad sender in ``config``.
    """
    if not is_valid_email(address):
        raise ValueError(f"user {user_id!r}: {address!r} is not a valid e-mail address")
    sender = _sender(config)
    token = message_token(ds, user_id)
    subject, text, html = render_bodies(ds, user_id, frequency, slot, items, config)
    message_id = f"<digest.{ds}.{token}@{sender.domain}>"

    msg = EmailMessage(policy=MESSAGE_POLICY)
    msg["From"] = sender
    msg["To"] = Address(addr_spec=address)
    msg.set_raw("Subject", _fold_subject(subject))
    msg["Date"] = format_datetime(slot.send_at)
    msg["Message-ID"] = message_id
    msg["List-Id"] = f"Nightfeed digest <digest.{sender.domain}>"
    msg.set_raw("List-Unsubscribe", f"<{unsubscribe_link(user_id, ds, config)}>")
    msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    msg["Auto-Submitted"] = "auto-generated"
    # Quoted-printable keeps the message 7-bit, so any relay takes it; its "=XX" escapes also mean the
    # body can never contain the "==" that opens the boundary below.
    msg.set_content(text, subtype="plain", charset="utf-8", cte="quoted-printable")
    msg.add_alternative(html, subtype="html", charset="utf-8", cte="quoted-printable")
    for part in msg.iter_parts():
        del part["MIME-Version"]
    boundary = f"==nightfeed-{token}=="
    msg.set_boundary(boundary)

    raw = msg.as_bytes()
    if raw.count(f"--{boundary}".encode()) != 3:
        raise RuntimeError(f"MIME boundary of the digest of user {user_id!r} occurs inside a part")
    return DigestMessage(
        user_id=user_id,
        to=address,
        message_id=message_id,
        subject=subject,
        item_ids=tuple(item.item_id for item in items),
        send_at=slot.send_at,
        local_send_date=slot.local_date,
        raw=raw.decode("ascii"),
    )


def _fold_subject(subject: str) -> str:
    """The Subject value, RFC 2047-encoded and folded at spaces into lines of at most 78 characters.

    Python's folder moves a whole value that would fit on a line of its own onto a continuation line
    ("Subject:" CRLF SP value), which its own parser then reads back with a leading space. Folding its
    encoded output again, greedily at the spaces it has, keeps every line short and round-trips:
    unfolding only removes the CRLFs inserted before those spaces.
    """
    header = MESSAGE_POLICY.header_factory("Subject", subject)
    unfolded = header.fold(policy=MESSAGE_POLICY).rstrip("\r\n").replace("\r\n", "")
    lines = [""]
    for word in unfolded.split(" "):
        if not lines[-1]:
            lines[-1] = word
        elif len(lines[-1]) + 1 + len(word) <= 78:
            lines[-1] += " " + word
        else:
            lines.append(" " + word)
    return "\r\n".join(lines).removeprefix("Subject: ")
