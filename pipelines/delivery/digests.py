"""Digest e-mails: turn the night's published candidates into one personalised message per due user.

Reads:
    ``candidates/ds=<ds>/`` (published Parquet shards, ``schema.CANDIDATES``, rank 1 = best), and the
    ``messages.parquet`` index of the digests published for the ``previous_digest_days`` run dates
    before ``ds`` (to never send an item twice). Users and items come in as Arrow tables from the caller.
Writes:
    ``digests/ds=<ds>/`` via write-audit-publish: one JSON Lines file per candidates shard
    (``shard=NNN.jsonl``, one object per message: ``user_id``, ``message_id``, ``subject``, ``to``,
    ``send_at``, ``local_send_date``, ``item_ids`` and ``raw``, the complete RFC 5322 message with CRLF
    line ends) and ``messages.parquet``, the index of every message (user, message id, subject, item ids,
    send time, file). The manifest's metadata holds the counts, including users skipped and why.

Sharding. Users are split as for the candidates (``crc32(user_id) % num_shards``): shard ``k`` renders
the due users of candidates file ``shard=k`` (:func:`render_digest_shard`, one mapped Airflow task
each) into one staging folder opened by :func:`plan_digests`; :func:`publish_digests` merges the index
and writes the manifest last. :func:`render_and_publish_digests` does the same in one process.

When a digest is due. The run for ``ds`` prepares the messages whose send time falls in the UTC day
after ``ds``: the window ``[ds+1 00:00 UTC, ds+2 00:00 UTC)``. A user's send time on a local calendar day
is ``send_hour_local`` o'clock on that day in the user's own timezone (a wall-clock hour skipped by a
DST change is moved forward by the gap; an hour that occurs twice means its first occurrence). So the
local send day is ds+1 for most of the world and ds+2 far east (with ``send_hour_local=7``, every zone
ahead of UTC+7: Pacific/Kiritimati gets 07:00 local on ds+2, 17:00 UTC on ds+1). Every send time thus
comes after the data of ``ds`` closed and within a day of it (the sender holds each message until its
``send_at`` and sends at once those whose time passed while the run worked). Consecutive runs' windows
tile time, so each local send slot belongs to exactly one run. Daily users are due when their window
holds a slot; weekly users when it holds a slot on their ``digest_weekday`` (0 = Monday) of the local
calendar. Slots 23 or 25 hours
apart around a DST change can put two slots of a zone in one window, or none, but only for send hours
that fall near midnight UTC: with two, a user still gets one message, for the first qualifying slot
(a daily user then goes one local day without); a window with none has nobody due in that zone.

Who is skipped, in this order of checks, each counted under its reason: ``opted_out``,
``invalid_email`` (not a plain ASCII ``local@domain.tld`` address), ``bad_timezone`` (not an IANA name),
``bad_schedule`` (unknown frequency, or weekly without a weekday 0..6), ``not_due``, ``no_candidates``
(none published for the user), ``too_few_fresh_candidates`` (fewer than ``min_fresh_candidates`` left
after dropping items already sent, deleted items and items missing from the items table).

Safety. Every field of a post is untrusted: control characters and bidi override/isolate controls are
removed and whitespace (newlines included) collapses to single spaces, because every post field is
rendered as one line or one paragraph; the HTML template autoescapes; only absolute http(s) links without
credentials are kept (others point to the item's page on ``base_url``). Message-ID, Date (the send
time) and the MIME boundary are functions of ``ds`` and the user, so a rerun writes identical bytes.

Links. Reading links carry ``utm_source=nightfeed``, ``utm_medium=email``, ``utm_campaign=digest-<ds>``
and ``nf_mid=<message token>``. The unsubscribe URL carries the user id and an HMAC-SHA256 token keyed
with ``unsubscribe_secret``; it is in the footer and in ``List-Unsubscribe`` with
``List-Unsubscribe-Post: List-Unsubscribe=One-Click`` (RFC 8058: a POST unsubscribes, a GET should only
show a confirmation, since link scanners follow links). The signing MTA must cover both headers in DKIM.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import hmac
import json
import logging
import re
import textwrap
import time
import unicodedata
import zoneinfo
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from email import policy as email_policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import jinja2
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.core.lake import Lake, ManifestError
from pipelines.core.paths import LakePaths
from pipelines.core.schema import DIGEST_FREQUENCIES
from pipelines.core.settings import LOCAL_UNSUBSCRIBE_SECRET, DigestConfig
from pipelines.core.tables import first_null, require_columns

log = logging.getLogger(__name__)

TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"
MESSAGES_INDEX = "messages.parquet"
SKIP_REASONS: tuple[str, ...] = (
    "opted_out",
    "invalid_email",
    "bad_timezone",
    "bad_schedule",
    "not_due",
    "no_candidates",
    "too_few_fresh_candidates",
)
TRACKING_PARAMS: tuple[str, ...] = ("utm_source", "utm_medium", "utm_campaign", "nf_mid")
USER_COLUMNS: tuple[str, ...] = (
    "user_id",
    "email",
    "digest_opt_in",
    "digest_frequency",
    "digest_weekday",
    "timezone",
)
ITEM_COLUMNS: tuple[str, ...] = ("item_id", "title", "summary", "tags", "source", "url")
DELETED_COLUMN = "deleted"  # optional: a catalog already limited to live items may leave it out
CANDIDATE_COLUMNS: tuple[str, ...] = ("user_id", "rank", "item_id")
MAX_TAGS = 5
SUBJECT_TITLE_CHARS = 70

# Policy of the written messages: SMTP line ends (CRLF), headers folded at 78. ``refold_source="none"``
# keeps the headers set with ``set_raw`` (List-Unsubscribe) as written: Python would otherwise turn a
# long URL into RFC 2047 encoded-words, which mail clients do not decode in that header.
MESSAGE_POLICY = email_policy.SMTP.clone(refold_source="none")

MESSAGES_INDEX_SCHEMA = pa.schema(
    [
        pa.field("user_id", pa.string()),
        pa.field("message_id", pa.string()),
        pa.field("subject", pa.string()),
        pa.field("item_ids", pa.list_(pa.string())),
        pa.field("send_at", pa.timestamp("us", tz="UTC")),
        pa.field("local_send_date", pa.date32()),
        pa.field("file", pa.string()),
    ]
)

_WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
# Characters dropped from untrusted text: control characters that are not whitespace (whitespace ones,
# like tab, newline and NEL, become spaces), the byte order mark, and bidi embedding, override and
# isolate controls, which can reorder the text around them (spoofed titles, a digest laid out
# backwards); right-to-left letters themselves are kept and shown with dir="auto".
_DROPPED_CHARS = dict.fromkeys(
    [cp for cp in [*range(0x20), 0x7F, *range(0x80, 0xA0)] if not chr(cp).isspace()]
    + [0xFEFF, 0x202A, 0x202B, 0x202C, 0x202D, 0x202E, 0x2066, 0x2067, 0x2068, 0x2069]
)
_EMAIL_RE = re.compile(
    r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}$"
)
_HOST_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?(?::\d{1,5})?$")
_URL_SAFE = "/%:@!$&'()*+,;=-._~"


# -- when a digest is due ----------------------------------------------------------------------------
@dataclass(frozen=True)
class SendSlot:
    """One send time of a user: ``send_hour_local`` on ``local_date`` in their zone, as a UTC instant."""

    local_date: dt.date
    send_at: dt.datetime


def send_window(ds: dt.date) -> tuple[dt.datetime, dt.datetime]:
    """The UTC window whose send slots the run for ``ds`` prepares: ``[ds+1 00:00, ds+2 00:00)``."""
    start = dt.datetime.combine(ds, dt.time(), tzinfo=dt.UTC)
    start += dt.timedelta(days=1)
    return start, start + dt.timedelta(days=1)


@functools.lru_cache(maxsize=1)
def _zone_names() -> frozenset[str]:
    # "localtime" is whatever this machine is set to, "Factory" a placeholder: neither names a place,
    # and the first would make the output depend on the machine.
    return frozenset(zoneinfo.available_timezones() - {"localtime", "Factory", "posixrules"})


@functools.lru_cache(maxsize=1024)
def _zone(name: str) -> zoneinfo.ZoneInfo:
    if name not in _zone_names():
        raise ValueError(f"timezone must be an IANA name like Europe/Berlin, got {name!r}")
    return zoneinfo.ZoneInfo(name)


@functools.lru_cache(maxsize=4096)
def send_slots(ds: dt.date, timezone: str, send_hour: int) -> tuple[SendSlot, ...]:
    """Every send slot of a user in ``timezone`` that falls in the window of the run for ``ds``.

    Args:
        ds: run date.
        timezone: IANA zone name of the user.
        send_hour: local wall-clock hour of the send, 0..23.

    Returns:
        The slots in time order: usually one, none or two only around a DST change.

    Raises:
        ValueError: ``timezone`` is not an IANA name, or ``send_hour`` is outside 0..23.
    """
    if not 0 <= send_hour <= 23:
        raise ValueError(f"send_hour must be 0..23, got {send_hour}")
    zone = _zone(timezone)
    start, end = send_window(ds)
    run_date = ds
    slots = []
    # UTC offsets lie within -12..+14 h, so only the local days ds .. ds+2 can have a slot in the
    # window; one day more on each side costs nothing and needs no proof.
    for days in range(-1, 4):
        local_date = run_date + dt.timedelta(days=days)
        # fold=0: a skipped wall time maps forward by the gap, a repeated one to its first occurrence.
        local = dt.datetime.combine(local_date, dt.time(send_hour), tzinfo=zone)
        send_at = local.astimezone(dt.UTC)
        if start <= send_at < end:
            slots.append(SendSlot(local_date, send_at))
    return tuple(slots)


def due_slot(
    ds: dt.date, timezone: str, frequency: str | None, weekday: int | None, send_hour: int
) -> SendSlot | None:
    """The slot a user's digest is sent at by the run for ``ds``, or None when it is not due.

    Args:
        ds: run date.
        timezone: IANA zone name of the user.
        frequency: ``daily`` or ``weekly``.
        weekday: for weekly users, the local weekday of the send, 0 = Monday .. 6 = Sunday.
        send_hour: local wall-clock hour of the send.

    Raises:
        ValueError: bad timezone (message starts with ``timezone``) or a bad schedule (``frequency``).
    """
    slots = send_slots(ds, timezone, send_hour)
    if frequency not in DIGEST_FREQUENCIES:
        raise ValueError(f"frequency must be one of {DIGEST_FREQUENCIES}, got {frequency!r}")
    if frequency == "daily":
        return slots[0] if slots else None
    if weekday is None or not 0 <= weekday <= 6:
        raise ValueError(f"frequency weekly needs a weekday 0..6, got {weekday!r}")
    return next((slot for slot in slots if slot.local_date.weekday() == weekday), None)


def is_valid_email(address: str | None) -> bool:
    """True for a plain ASCII ``local@domain.tld`` address of at most 254 characters."""
    return bool(address) and len(address) <= 254 and _EMAIL_RE.match(address) is not None


# -- links and tokens --------------------------------------------------------------------------------
def unsubscribe_token(user_id: str, secret: str) -> str:
    """The unsubscribe token of ``user_id``: HMAC-SHA256 keyed with ``secret``, first 32 hex digits."""
    return hmac.new(secret.encode(), user_id.encode(), hashlib.sha256).hexdigest()[:32]


def verify_unsubscribe_token(user_id: str, token: str, secret: str) -> bool:
    """True when ``token`` is the unsubscribe token of ``user_id`` (constant-time comparison)."""
    return hmac.compare_digest(unsubscribe_token(user_id, secret), token)


def unsubscribe_link(user_id: str, config: DigestConfig) -> str:
    """The one-click unsubscribe URL of ``user_id``: GET shows a confirmation, POST unsubscribes."""
    query = urlencode({"u": user_id, "t": unsubscribe_token(user_id, config.unsubscribe_secret)})
    return f"{config.unsubscribe_url}?{query}"


def message_token(ds: dt.date, user_id: str) -> str:
    """Stable id of the digest of ``user_id`` for ``ds``: in the Message-ID, links and MIME boundary."""
    return hashlib.sha256(f"nightfeed-digest\0{ds}\0{user_id}".encode()).hexdigest()[:24]


def tracked_link(url: str | None, item_id: str, ds: dt.date, token: str, base_url: str) -> str:
    """The reading link of an item with the digest's tracking parameters.

    Only an absolute http(s) URL with a plain host is kept (no ``javascript:``, no ``user@host``
    tricks, no spaces); anything else links to the item's page on ``base_url``. Existing query
    parameters stay, tracking parameters already there are replaced.
    """
    parts = _safe_url_parts(clean_text(url))
    if parts is None:
        parts = urlsplit(f"{base_url.rstrip('/')}/items/{quote(item_id, safe='')}")
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in TRACKING_PARAMS]
    query += [
        ("utm_source", "nightfeed"),
        ("utm_medium", "email"),
        ("utm_campaign", f"digest-{ds}"),
        ("nf_mid", token),
    ]
    return urlunsplit(
        (
            parts.scheme.lower(),
            parts.netloc.lower(),
            quote(parts.path, safe=_URL_SAFE),
            urlencode(query, quote_via=quote),
            quote(parts.fragment, safe=_URL_SAFE),
        )
    )


def _safe_url_parts(url: str):
    if not url or any(ch.isspace() for ch in url):
        return None
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not _HOST_RE.match(parts.netloc):
        return None
    return parts


# -- untrusted text ----------------------------------------------------------------------------------
def clean_text(value: str | None) -> str:
    """One line of display text from an untrusted string.

    Removes control characters (C0, C1, DEL), bidi embedding/override/isolate controls and byte order
    marks; turns every run of whitespace (newlines and tabs included) into one space. Letters of any
    script, emoji and their joiners are kept.
    """
    if not value:
        return ""
    return " ".join(value.translate(_DROPPED_CHARS).split())


def excerpt(text: str, max_chars: int) -> str:
    """``text`` cut to at most ``max_chars`` characters at a word boundary, with an ellipsis when cut.

    A text with no space in its first ``max_chars`` characters (one long word, or a script written
    without spaces) is cut inside the word, but never inside a letter with its marks or an emoji sequence.
    """
    if len(text) <= max_chars:
        return text
    cut = text[: max_chars - 1]
    space = cut.rfind(" ")
    if space > 0 and text[len(cut)] != " ":
        cut = cut[:space]
    while cut and (_attaches_to_previous(text[len(cut)]) or cut[-1] == "\u200d"):
        cut = cut[:-1]
    return cut.rstrip(" ,;:.-–—") + "…"


def _attaches_to_previous(ch: str) -> bool:
    # Combining marks, variation selectors, the zero-width joiner and emoji skin-tone modifiers.
    return (
        unicodedata.category(ch) in ("Mn", "Mc", "Me")
        or ch in "\u200d\ufe0e\ufe0f"
        or ("\U0001f3fb" <= ch <= "\U0001f3ff")
    )


# -- rendering ---------------------------------------------------------------------------------------
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


def _sender(config: DigestConfig) -> Address:
    header = email_policy.default.header_factory("from", config.sender)
    addresses = header.addresses
    if header.defects or len(addresses) != 1 or not addresses[0].domain:
        raise ValueError(
            f"DigestConfig.sender must be one address like 'Name <a@b.example>', got {config.sender!r}"
        )
    return addresses[0]


def check_config(config: DigestConfig) -> None:
    """Fail early on a config that would produce broken messages.

    Raises:
        ValueError: the sender is not one address, or a URL setting is not an absolute https URL
            (RFC 8058 requires https for one-click unsubscribe).
    """
    _sender(config)
    for name in ("base_url", "unsubscribe_url"):
        value = getattr(config, name)
        parts = urlsplit(value)
        if parts.scheme != "https" or not parts.netloc or parts.query or parts.fragment:
            raise ValueError(f"DigestConfig.{name} must be an https URL without query, got {value!r}")


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
        "unsubscribe_link": unsubscribe_link(user_id, config),
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
    msg.set_raw("List-Unsubscribe", f"<{unsubscribe_link(user_id, config)}>")
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


# -- the stage ---------------------------------------------------------------------------------------
@dataclass
class DigestReport:
    """What a digest run did. ``messages`` holds the rendered messages on a dry run only."""

    ds: str
    dry_run: bool
    users_total: int
    messages_written: int
    skipped: dict[str, int]
    files: list[str] = field(default_factory=list)
    manifest_uri: str | None = None
    messages: list[DigestMessage] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (a dry run's messages by user, id, subject and items; no raw messages)."""
        return {
            "ds": self.ds,
            "dry_run": self.dry_run,
            "users_total": self.users_total,
            "messages_written": self.messages_written,
            "skipped": dict(self.skipped),
            "files": list(self.files),
            "manifest_uri": self.manifest_uri,
            "seconds": round(self.seconds, 3),
            "sample": [
                {
                    "user_id": m.user_id,
                    "message_id": m.message_id,
                    "subject": m.subject,
                    "item_ids": list(m.item_ids),
                    "send_at": m.send_at.isoformat(),
                }
                for m in self.messages
            ],
        }


@dataclass(frozen=True)
class _Recipient:
    user_id: str
    email: str
    frequency: str
    slot: SendSlot


def _user_rows(users: pa.Table, shard: int | None = None, num_shards: int = 1) -> list[dict[str, Any]]:
    """The users' rows as dicts (only those of ``shard`` when given); errors name the table's row."""
    from pipelines.serving.shards import shard_of

    require_columns(users, USER_COLUMNS, "users table")
    row = first_null(users, "user_id")
    if row is not None:
        raise ValueError(f"users table row {row} has no user_id")
    table = users.select(list(USER_COLUMNS))
    numbers = np.arange(table.num_rows)
    if shard is not None:
        numbers = np.flatnonzero(shard_of(table.column("user_id").to_pylist(), num_shards) == shard)
        table = table.take(pa.array(numbers))
    rows = table.to_pylist()
    seen: dict[str, int] = {}
    for i, user in zip(numbers.tolist(), rows, strict=True):
        if user["user_id"] in seen:
            raise ValueError(
                f"users table rows {seen[user['user_id']]} and {i} share user_id {user['user_id']!r}"
            )
        seen[user["user_id"]] = i
    return rows


def _recipient(user: dict[str, Any], ds: dt.date, config: DigestConfig) -> _Recipient | str:
    """The recipient for ``user`` when due, else the skip reason."""
    if user["digest_opt_in"] is not True:
        return "opted_out"
    if not is_valid_email(user["email"]):
        return "invalid_email"
    try:
        send_slots(ds, user["timezone"] or "", config.send_hour_local)
    except ValueError:
        return "bad_timezone"
    try:
        slot = due_slot(
            ds, user["timezone"], user["digest_frequency"], user["digest_weekday"], config.send_hour_local
        )
    except ValueError:
        return "bad_schedule"
    if slot is None:
        return "not_due"
    return _Recipient(user["user_id"], user["email"], user["digest_frequency"], slot)


def _item_lookup(items: pa.Table, item_ids: pa.Array) -> dict[str, dict[str, Any]]:
    """Items-table rows of ``item_ids`` by id. Raises ValueError on a missing column or a duplicate id."""
    require_columns(items, ITEM_COLUMNS, "items table")
    columns = [*ITEM_COLUMNS, DELETED_COLUMN] if DELETED_COLUMN in items.column_names else list(ITEM_COLUMNS)
    wanted = items.filter(pc.is_in(items.column("item_id"), value_set=pc.unique(item_ids)))
    lookup: dict[str, dict[str, Any]] = {}
    for row in wanted.select(columns).to_pylist():
        if row["item_id"] in lookup:
            raise ValueError(f"items table has item_id {row['item_id']!r} more than once")
        lookup[row["item_id"]] = row
    return lookup


def _previously_sent(lake: Lake, ds: dt.date, days: int, user_ids: set[str]) -> dict[str, set[str]]:
    """Item ids in the published digests of the ``days`` run dates before ``ds``, per user."""
    sent: dict[str, set[str]] = defaultdict(set)
    run_date = ds
    wanted = pa.array(sorted(user_ids), pa.string())
    for back in range(1, days + 1):
        dataset = LakePaths.digests(run_date - dt.timedelta(days=back))
        try:
            manifest = lake.read_manifest(dataset)
        except ManifestError:
            continue
        if MESSAGES_INDEX not in manifest["files"]:
            raise ManifestError(f"{lake.uri(dataset)} is published without {MESSAGES_INDEX}")
        index = lake.read_parquet(
            f"{dataset}/run={manifest['staging']}/{MESSAGES_INDEX}", ["user_id", "item_ids"]
        )
        index = index.filter(pc.is_in(index.column("user_id"), value_set=wanted))
        for user_id, item_ids in zip(
            index.column("user_id").to_pylist(), index.column("item_ids").to_pylist(), strict=True
        ):
            sent[user_id].update(item_ids or [])
    return sent


def _read_candidates(
    lake: Lake, path: str, user_ids: set[str], shard: int, num_shards: int
) -> dict[str, list[str]]:
    """Ranked item ids per user of ``user_ids`` in candidates shard ``shard`` (duplicates dropped).

    Raises:
        ValueError: a missing column, a null key, or a user of another shard in the file.
    """
    from pipelines.serving.shards import shard_of

    table = lake.read_parquet(path)
    require_columns(table, CANDIDATE_COLUMNS, f"candidates shard {lake.uri(path)}")
    for column in CANDIDATE_COLUMNS:
        row = first_null(table, column)
        if row is not None:
            raise ValueError(f"candidates shard {lake.uri(path)} row {row} has a null {column}")
    listed = pc.unique(table.column("user_id")).to_pylist()
    owners = shard_of(listed, num_shards)
    if (owners != shard).any():
        stray = int(np.flatnonzero(owners != shard)[0])
        raise ValueError(
            f"user {listed[stray]!r} has candidates in {lake.uri(path)} (shard {shard} of {num_shards}) "
            f"but belongs to shard {owners[stray]}"
        )
    table = table.filter(pc.is_in(table.column("user_id"), value_set=pa.array(sorted(user_ids), pa.string())))
    table = table.sort_by([("user_id", "ascending"), ("rank", "ascending"), ("item_id", "ascending")])
    ranked: dict[str, list[str]] = defaultdict(list)
    for user_id, item_id in zip(
        table.column("user_id").to_pylist(), table.column("item_id").to_pylist(), strict=True
    ):
        if item_id not in ranked[user_id]:
            ranked[user_id].append(item_id)
    return ranked


def _fresh_items(
    ranked: list[str], sent: set[str], lookup: dict[str, dict[str, Any]]
) -> list[dict[str, Any]]:
    return [
        lookup[item_id]
        for item_id in ranked
        if item_id not in sent and item_id in lookup and lookup[item_id].get(DELETED_COLUMN) is not True
    ]


@dataclass
class ShardDigests:
    """What one candidates shard's digests came to; ``messages`` are kept only on a dry run."""

    shard: int
    users_total: int
    messages_written: int
    skipped: Counter[str]
    file: str | None
    seconds: float
    messages: list[DigestMessage] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """The small JSON-ready part a mapped task hands to :func:`publish_digests`."""
        return {
            "shard": self.shard,
            "users_total": self.users_total,
            "messages_written": self.messages_written,
            "skipped": dict(self.skipped),
            "file": self.file,
            "seconds": round(self.seconds, 3),
        }


def _index_part(shard: int) -> str:
    return f"_index-{LakePaths.shard_file(shard)}"


def _candidate_shard_files(lake: Lake, ds: dt.date) -> list[str]:
    """The published candidate shard files of ``ds``, file ``k`` being shard ``k``."""
    files = lake.manifest_files(LakePaths.candidates(ds))
    names = [PurePosixPath(f).name for f in files]
    expected = [LakePaths.shard_file(k) for k in range(len(files))]
    if names != expected:
        raise ValueError(f"{lake.uri(LakePaths.candidates(ds))}: shard files {names}, expected {expected}")
    return files


def plan_digests(lake: Lake, ds: dt.date, dry_run: bool = False) -> list[dict[str, Any]]:
    """One work item per published candidates shard of ``ds``, all writing into one fresh staging folder
    of ``ds``'s digests (none on a dry run).

    Raises:
        ManifestError: the candidates of ``ds`` are not published.
    """
    files = _candidate_shard_files(lake, ds)
    staging = None if dry_run else lake.begin_publish(LakePaths.digests(ds))
    return [{"shard": k, "num_shards": len(files), "staging": staging} for k in range(len(files))]


def render_digest_shard(
    lake: Lake,
    ds: dt.date,
    shard: int,
    num_shards: int,
    staging: str | None,
    users: pa.Table,
    items: pa.Table,
    config: DigestConfig,
    dry_run_users: int | None = None,
) -> ShardDigests:
    """Render the digests of the users of one candidates shard (``crc32(user_id) % num_shards``).

    Writes ``shard=NNN.jsonl`` and this shard's part of the message index into ``staging``; nothing is
    visible before :func:`publish_digests`. A dry run (``staging`` None) renders up to ``dry_run_users``
    messages, writes nothing and keeps the messages.

    Raises:
        ManifestError: the candidates of ``ds`` are not published.
        ValueError: bad ``ds``, shard or config; a users, items or candidates table with a missing
            column, a null key or a duplicate id; a user whose candidates are in another user's shard.
    """
    check_config(config)
    dry_run = staging is None
    if dry_run and (dry_run_users is None or dry_run_users < 1):
        raise ValueError(f"a dry run needs a positive dry_run_users, got {dry_run_users}")
    started = time.perf_counter()
    files = _candidate_shard_files(lake, ds)
    if num_shards != len(files) or not 0 <= shard < num_shards:
        raise ValueError(f"shard {shard} of {num_shards}: the candidates of ds={ds} have {len(files)} shards")

    mine = _user_rows(users, shard, num_shards)
    skipped: Counter[str] = Counter()
    due: dict[str, _Recipient] = {}
    for user in mine:
        outcome = _recipient(user, ds, config)
        if isinstance(outcome, str):
            skipped[outcome] += 1
        else:
            due[outcome.user_id] = outcome

    shard_path = files[shard]
    ranked = _read_candidates(lake, shard_path, set(due), shard, num_shards)
    sent_before = _previously_sent(lake, ds, config.previous_digest_days, set(ranked))
    lookup = _item_lookup(items, pa.array([i for ids in ranked.values() for i in ids], pa.string()))
    messages: list[DigestMessage] = []
    for user_id in sorted(ranked):
        if dry_run and len(messages) >= dry_run_users:
            break
        recipient = due[user_id]
        fresh = _fresh_items(ranked[user_id], sent_before.get(user_id, set()), lookup)
        if len(fresh) < config.min_fresh_candidates:
            skipped["too_few_fresh_candidates"] += 1
            continue
        token = message_token(ds, user_id)
        shown = [digest_item(row, ds, token, config) for row in fresh[: config.items_per_digest]]
        messages.append(
            render_message(ds, user_id, recipient.email, recipient.frequency, recipient.slot, shown, config)
        )
    result = ShardDigests(shard, len(mine), 0, skipped, None, 0.0)
    if dry_run:
        result.messages = messages
    else:
        skipped["no_candidates"] += len(set(due) - set(ranked))
        file_name = f"{PurePosixPath(shard_path).stem}.jsonl"
        lines = [json.dumps(m.record(), ensure_ascii=False, sort_keys=True) + "\n" for m in messages]
        lake.write_bytes(f"{staging}/{file_name}", "".join(lines).encode("utf-8"))
        index_rows = [
            {
                "user_id": m.user_id,
                "message_id": m.message_id,
                "subject": m.subject,
                "item_ids": list(m.item_ids),
                "send_at": m.send_at,
                "local_send_date": m.local_send_date,
                "file": file_name,
            }
            for m in messages
        ]
        lake.write_parquet(
            f"{staging}/{_index_part(shard)}", pa.Table.from_pylist(index_rows, MESSAGES_INDEX_SCHEMA)
        )
        result.file, result.messages_written = file_name, len(messages)
    result.seconds = time.perf_counter() - started
    log.info(
        "digests %s shard %d/%d: %d messages for %d users (%d due) in %.1f s",
        ds,
        shard,
        num_shards,
        len(messages),
        len(mine),
        len(due),
        result.seconds,
    )
    return result


def publish_digests(
    lake: Lake, ds: dt.date, staging: str, shard_results: Sequence[dict[str, Any]], config: DigestConfig
) -> DigestReport:
    """Publish ``ds``'s digests once every shard is rendered: the message index, then the manifest.

    Raises:
        ValueError: the shard results do not cover every candidates shard exactly once.
        ManifestError: a shard's files are missing from ``staging``.
    """
    if config.unsubscribe_secret == LOCAL_UNSUBSCRIBE_SECRET:
        log.warning("digest unsubscribe links use the built-in local secret; set digest.unsubscribe_secret")
    results = sorted(shard_results, key=lambda r: r["shard"])
    n = len(_candidate_shard_files(lake, ds))
    if [r["shard"] for r in results] != list(range(n)):
        raise ValueError(
            f"ds={ds}: digest shard results {[r['shard'] for r in results]} do not cover {n} shards"
        )
    parts = [f"{staging}/{_index_part(r['shard'])}" for r in results]
    missing = [p for p in parts if not lake.exists(p)]
    if missing:
        raise ManifestError(f"cannot publish {lake.uri(LakePaths.digests(ds))}: missing {missing}")
    index = pa.concat_tables([lake.read_parquet(p) for p in parts]).cast(MESSAGES_INDEX_SCHEMA)
    lake.write_parquet(f"{staging}/{MESSAGES_INDEX}", index)
    skipped: Counter[str] = Counter()
    for r in results:
        skipped.update(r["skipped"])
    files = [r["file"] for r in results]
    report = DigestReport(
        ds=ds.isoformat(),
        dry_run=False,
        users_total=sum(r["users_total"] for r in results),
        messages_written=sum(r["messages_written"] for r in results),
        skipped={reason: skipped.get(reason, 0) for reason in SKIP_REASONS},
        seconds=sum(r["seconds"] for r in results),
    )
    window_start, window_end = send_window(ds)
    dataset = LakePaths.digests(ds)
    lake.publish(
        dataset,
        staging,
        [*files, MESSAGES_INDEX],
        metadata={
            "ds": ds.isoformat(),
            "messages": report.messages_written,
            "users_total": report.users_total,
            "skipped": report.skipped,
            "send_window_utc": [window_start.isoformat(), window_end.isoformat()],
            "send_hour_local": config.send_hour_local,
            "items_per_digest": config.items_per_digest,
            "candidates_staging": lake.read_manifest(LakePaths.candidates(ds))["staging"],
            "format": "jsonl: user_id, to, message_id, subject, item_ids, send_at, local_send_date, raw",
        },
    )
    for part in parts:
        lake.rm(part)
    report.files = [lake.uri(f"{staging}/{name}") for name in files]
    report.manifest_uri = lake.uri(dataset)
    log.info(
        "digests %s: %d messages for %d users in %.1f s of shard work (%.0f messages/s); skipped %s",
        ds,
        report.messages_written,
        report.users_total,
        report.seconds,
        report.messages_written / max(report.seconds, 1e-9),
        dict(skipped),
    )
    return report


def render_and_publish_digests(
    lake: Lake,
    ds: dt.date,
    users: pa.Table,
    items: pa.Table,
    config: DigestConfig,
    dry_run_users: int | None = None,
) -> DigestReport:
    """Render and publish the digests of the run for ``ds`` in this process, shard after shard (the
    nightly DAG runs :func:`render_digest_shard` as one mapped task per shard instead).

    Args:
        lake: the lake holding ``candidates/ds=<ds>`` and earlier digests.
        ds: run date.
        users: users table, one row per user, with at least ``USER_COLUMNS`` (``schema.RAW_USERS`` or
            the serving ``profiles`` input; other columns are ignored).
        items: items table, one row per item, with at least ``ITEM_COLUMNS`` and optionally ``deleted``
            (``schema.RAW_ITEMS`` or the serving ``items`` input, which holds live items only).
        config: digest settings.
        dry_run_users: render the digests of this many due users only, publish nothing, and return the
            messages in the report.

    Returns:
        A :class:`DigestReport`: messages written, users skipped per reason, files and manifest.

    Raises:
        ManifestError: the candidates of ``ds`` are not published, or an earlier digest lacks its index.
        ValueError: bad ``ds``, ``dry_run_users`` or config; a users, items or candidates table with a
            missing column, a null key or a duplicate id; a user in another user's shard.
    """
    check_config(config)
    if dry_run_users is not None and dry_run_users < 1:
        raise ValueError(f"dry_run_users must be a positive count or None, got {dry_run_users}")
    dry_run = dry_run_users is not None
    plan = plan_digests(lake, ds, dry_run=dry_run)
    if not dry_run:
        shards = [
            render_digest_shard(lake, ds, p["shard"], p["num_shards"], p["staging"], users, items, config)
            for p in plan
        ]
        return publish_digests(lake, ds, plan[0]["staging"], [s.summary() for s in shards], config)
    report = DigestReport(ds=ds.isoformat(), dry_run=True, users_total=0, messages_written=0, skipped={})
    skipped: Counter[str] = Counter()
    for p in plan:
        left = dry_run_users - len(report.messages)
        if left <= 0:
            break
        shard = render_digest_shard(lake, ds, p["shard"], p["num_shards"], None, users, items, config, left)
        report.messages.extend(shard.messages)
        report.users_total += shard.users_total
        report.seconds += shard.seconds
        skipped.update(shard.skipped)
    report.skipped = {reason: skipped.get(reason, 0) for reason in SKIP_REASONS}
    log.info("digests %s dry run: rendered %d messages in %.1f s", ds, len(report.messages), report.seconds)
    return report


def preview_digest(
    lake: Lake,
    ds: dt.date,
    user_id: str,
    users: pa.Table,
    items: pa.Table,
    config: DigestConfig,
    out_path: str | Path,
) -> Path:
    """Write the HTML body of one user's digest for ``ds`` to ``out_path`` for a person to look at.

    Works for users who are not due, opted out or below ``min_fresh_candidates``: it shows the fresh
    candidates they have. The date is their due slot, else their first slot in the window (UTC when
    their timezone is invalid); the frequency shown is theirs, ``daily`` when unknown.

    Args:
        lake: the lake holding ``candidates/ds=<ds>``.
        ds: run date.
        user_id: the user to preview.
        users: users table, as for :func:`render_and_publish_digests`.
        items: items table, as for :func:`render_and_publish_digests`.
        config: digest settings.
        out_path: local path of the HTML file to write.

    Returns:
        ``out_path`` as a Path.

    Raises:
        ValueError: the user is not in ``users`` or has no fresh candidates in ``ds``.
        ManifestError: the candidates of ``ds`` are not published.
    """
    from pipelines.serving.shards import shard_of

    check_config(config)
    user = next((row for row in _user_rows(users) if row["user_id"] == user_id), None)
    if user is None:
        raise ValueError(f"user {user_id!r} is not in the users table")
    try:
        slots = send_slots(ds, user["timezone"] or "", config.send_hour_local)
    except ValueError:
        slots = send_slots(ds, "UTC", config.send_hour_local)
    try:
        slot = due_slot(
            ds, user["timezone"], user["digest_frequency"], user["digest_weekday"], config.send_hour_local
        )
    except ValueError:
        slot = None
    slot = slot or slots[0]
    frequency = user["digest_frequency"] if user["digest_frequency"] in DIGEST_FREQUENCIES else "daily"

    files = _candidate_shard_files(lake, ds)
    shard = int(shard_of([user_id], len(files))[0])
    ranked = _read_candidates(lake, files[shard], {user_id}, shard, len(files)).get(user_id, [])
    sent = _previously_sent(lake, ds, config.previous_digest_days, {user_id}).get(user_id, set())
    fresh = _fresh_items(ranked, sent, _item_lookup(items, pa.array(ranked, pa.string())))
    if not fresh:
        raise ValueError(f"user {user_id!r} has no fresh candidates in {LakePaths.candidates(ds)}")
    token = message_token(ds, user_id)
    shown = [digest_item(row, ds, token, config) for row in fresh[: config.items_per_digest]]
    _, _, html = render_bodies(ds, user_id, frequency, slot, shown, config)
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(html, encoding="utf-8")
    return out
