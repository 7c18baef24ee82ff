"""Digest e-mails: due logic, safe rendering, standard MIME, publishing to the lake."""

from __future__ import annotations

import datetime as dt
import email
import json
import unicodedata
from email import policy
from html.parser import HTMLParser
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from pipelines.core.lake import Lake, ManifestError
from pipelines.core.paths import LakePaths
from pipelines.core.schema import CANDIDATES, RAW_ITEMS, RAW_USERS
from pipelines.core.settings import DigestConfig
from pipelines.delivery.digests import (
    MESSAGES_INDEX,
    SendSlot,
    clean_text,
    digest_item,
    due_slot,
    excerpt,
    message_token,
    plan_digests,
    preview_digest,
    publish_digests,
    render_and_publish_digests,
    render_digest_shard,
    render_message,
    send_slots,
    send_window,
    tracked_link,
    unsubscribe_token,
    verify_unsubscribe_token,
)

UTC = dt.UTC
DS = dt.date(
    2026, 3, 7
)  # a Saturday; its run prepares the slots in [Sun 2026-03-08 00:00Z, Mon 03-09 00:00Z)
USERS_SCHEMA = pa.schema([f for f in RAW_USERS if f.name != "ds"])
ITEMS_SCHEMA = pa.schema([f for f in RAW_ITEMS if f.name != "ds"])
CONFIG = DigestConfig(items_per_digest=3, min_fresh_candidates=3)


# -- fixtures ----------------------------------------------------------------------------------------
def user(user_id: str, **over: Any) -> dict[str, Any]:
    row = {
        "user_id": user_id,
        "email": f"{user_id}@example.com",
        "signup_ts": dt.datetime(2026, 1, 1, tzinfo=UTC),
        "language": "en",
        "selected_tags": ["python"],
        "blocked_tags": [],
        "blocked_sources": [],
        "digest_opt_in": True,
        "digest_frequency": "daily",
        "digest_weekday": 0,
        "timezone": "UTC",
    }
    row.update(over)
    return row


def item(item_id: str, **over: Any) -> dict[str, Any]:
    row = {
        "item_id": item_id,
        "title": f"Title of {item_id}",
        "summary": f"Summary of {item_id}.",
        "tags": ["python", "databases"],
        "source": "source-001",
        "author": "author-1",
        "post_type": "article",
        "content_type": "text",
        "language": "en",
        "url": f"https://posts.example/{item_id}",
        "created_at": dt.datetime(2026, 3, 1, tzinfo=UTC),
        "deleted": False,
    }
    row.update(over)
    return row


def users_table(rows: list[dict[str, Any]]) -> pa.Table:
    return pa.Table.from_pylist(rows, USERS_SCHEMA)


def items_table(rows: list[dict[str, Any]]) -> pa.Table:
    return pa.Table.from_pylist(rows, ITEMS_SCHEMA)


def publish_candidates(lake: Lake, ds: str, shards: list[list[tuple[str, int, str]]]) -> None:
    """Publish (user_id, rank, item_id) rows per shard the way the candidates stage does."""
    dataset = LakePaths.candidates(ds)
    staging = lake.begin_publish(dataset)
    files = []
    for shard, rows in enumerate(shards):
        table = pa.Table.from_pylist(
            [
                {
                    "user_id": u,
                    "rank": r,
                    "item_id": i,
                    "score": 1.0 / r,
                    "retrieval_score": 0.5,
                    "reason": "x",
                }
                for u, r, i in rows
            ],
            CANDIDATES,
        )
        name = LakePaths.shard_file(shard)
        lake.write_parquet(f"{staging}/{name}", table)
        files.append(name)
    lake.publish(dataset, staging, files)


def published_records(lake: Lake, ds: str) -> list[dict[str, Any]]:
    records = []
    for path in lake.manifest_files(LakePaths.digests(ds)):
        if path.endswith(".jsonl"):
            records += [json.loads(line) for line in lake.read_bytes(path).decode().splitlines()]
    return records


def parse(raw: str) -> email.message.EmailMessage:
    return email.message_from_bytes(raw.encode("ascii"), policy=policy.default)


def bodies(raw: str) -> tuple[str, str]:
    msg = parse(raw)
    # The decoded parts keep the transport's CRLF line ends; compare text with plain newlines.
    text, html = (msg.get_body((kind,)).get_content() for kind in ("plain", "html"))
    return text.replace("\r\n", "\n"), html.replace("\r\n", "\n")


SLOT = SendSlot(dt.date(2026, 3, 8), dt.datetime(2026, 3, 8, 7, tzinfo=UTC))


def one_message(titles: list[str], user_id: str = "u01", **item_over: Any):
    token = message_token(DS, user_id)
    shown = [
        digest_item(item(f"i{n:02d}", title=title, **item_over), DS, token, CONFIG)
        for n, title in enumerate(titles, start=1)
    ]
    return render_message(DS, user_id, f"{user_id}@example.com", "daily", SLOT, shown, CONFIG)


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


# -- due logic ---------------------------------------------------------------------------------------
def test_send_window_is_the_utc_day_after_ds() -> None:
    assert send_window(DS) == (dt.datetime(2026, 3, 8, tzinfo=UTC), dt.datetime(2026, 3, 9, tzinfo=UTC))


def test_new_york_on_the_spring_forward_weekend() -> None:
    # Clocks jump 02:00 EST -> 03:00 EDT on Sun 2026-03-08. 07:00 EDT = 07 + 4 = 11:00Z.
    assert send_slots(DS, "America/New_York", 7) == (
        SendSlot(dt.date(2026, 3, 8), dt.datetime(2026, 3, 8, 11, tzinfo=UTC)),
    )
    # Saturday's 07:00 EST = 12:00Z on 03-07 belongs to the run before.
    assert send_slots(dt.date(2026, 3, 6), "America/New_York", 7)[0].send_at == dt.datetime(
        2026, 3, 7, 12, tzinfo=UTC
    )
    assert due_slot(DS, "America/New_York", "weekly", 6, 7) is not None  # Sunday
    assert due_slot(DS, "America/New_York", "weekly", 5, 7) is None  # Saturday
    # 02:00 does not exist that day: it moves forward by the gap, 02:00 EST = 07:00Z (= 03:00 EDT).
    assert send_slots(DS, "America/New_York", 2)[0].send_at == dt.datetime(2026, 3, 8, 7, tzinfo=UTC)


def test_two_slots_in_one_window_send_one_message() -> None:
    # Send hour 19 in New York: Sat 03-07 19:00 EST = 24:00Z = 03-08 00:00Z (window start, included),
    # Sun 03-08 19:00 EDT = 23:00Z on 03-08; both in the window of DS.
    sat = SendSlot(dt.date(2026, 3, 7), dt.datetime(2026, 3, 8, 0, tzinfo=UTC))
    sun = SendSlot(dt.date(2026, 3, 8), dt.datetime(2026, 3, 8, 23, tzinfo=UTC))
    assert send_slots(DS, "America/New_York", 19) == (sat, sun)
    assert due_slot(DS, "America/New_York", "daily", None, 19) == sat
    assert due_slot(DS, "America/New_York", "weekly", 6, 19) == sun


def test_fall_back_weekend_and_the_repeated_hour() -> None:
    # Clocks go back 02:00 EDT -> 01:00 EST on Sun 2026-11-01. Send hour 19: Sat 10-31 19:00 EDT = 23:00Z
    # on 10-31 and Sun 11-01 19:00 EST = 11-02 00:00Z, so the window [11-01Z, 11-02Z) of ds 10-31 holds none,
    assert send_slots(dt.date(2026, 10, 31), "America/New_York", 19) == ()
    assert due_slot(dt.date(2026, 10, 31), "America/New_York", "daily", None, 19) is None
    # and the run of ds 11-01 has Sunday's slot at its window start.
    assert send_slots(dt.date(2026, 11, 1), "America/New_York", 19) == (
        SendSlot(dt.date(2026, 11, 1), dt.datetime(2026, 11, 2, 0, tzinfo=UTC)),
    )
    # 01:00 happens twice on 11-01: the first one, EDT, 01 + 4 = 05:00Z.
    assert send_slots(dt.date(2026, 10, 31), "America/New_York", 1)[0].send_at == dt.datetime(
        2026, 11, 1, 5, tzinfo=UTC
    )


@pytest.mark.parametrize("send_hour", [0, 7, 19, 23])
@pytest.mark.parametrize(
    "zone", ["America/New_York", "Europe/London", "Pacific/Kiritimati", "Australia/Lord_Howe"]
)
def test_consecutive_runs_cover_every_local_day_exactly_once(zone: str, send_hour: int) -> None:
    # From ds 2026-02-20 to 2026-11-15 (both DST changes of the northern zones, two of Lord Howe's
    # half-hour ones), collect the local days of all slots: each day once, no gap.
    days = []
    ds = dt.date(2026, 2, 20)
    while ds <= dt.date(2026, 11, 15):
        days += [slot.local_date for slot in send_slots(ds, zone, send_hour)]
        ds += dt.timedelta(days=1)
    assert days == [days[0] + dt.timedelta(days=n) for n in range(len(days))]
    assert len(days) >= (dt.date(2026, 11, 15) - dt.date(2026, 2, 20)).days - 1


def test_date_line_kiritimati_and_pago_pago_get_different_local_days() -> None:
    # Kiritimati is UTC+14: 07:00 local = 17:00Z the day before, so DS's window holds Mon 03-09 07:00.
    # Pago Pago is UTC-11: 07:00 local = 18:00Z the same day, so the window holds Sun 03-08 07:00.
    assert send_slots(DS, "Pacific/Kiritimati", 7) == (
        SendSlot(dt.date(2026, 3, 9), dt.datetime(2026, 3, 8, 17, tzinfo=UTC)),
    )
    assert send_slots(DS, "Pacific/Pago_Pago", 7) == (
        SendSlot(dt.date(2026, 3, 8), dt.datetime(2026, 3, 8, 18, tzinfo=UTC)),
    )
    monday, sunday = 0, 6
    assert due_slot(DS, "Pacific/Kiritimati", "weekly", monday, 7) is not None
    assert due_slot(DS, "Pacific/Pago_Pago", "weekly", monday, 7) is None
    assert due_slot(DS, "Pacific/Kiritimati", "weekly", sunday, 7) is None
    assert due_slot(DS, "Pacific/Pago_Pago", "weekly", sunday, 7) is not None


def test_around_midnight() -> None:
    # Hour 0 in UTC: Sun 03-08 00:00Z is the window's first instant, included.
    assert send_slots(DS, "UTC", 0) == (
        SendSlot(dt.date(2026, 3, 8), dt.datetime(2026, 3, 8, 0, tzinfo=UTC)),
    )
    # Hour 0 in Berlin (UTC+1): Sun 00:00 = Sat 23:00Z (run before); Mon 03-09 00:00 = Sun 23:00Z (this run).
    assert send_slots(DS, "Europe/Berlin", 0) == (
        SendSlot(dt.date(2026, 3, 9), dt.datetime(2026, 3, 8, 23, tzinfo=UTC)),
    )
    # Hour 23 in UTC: Sun 23:00Z is in, Mon 23:00Z is the next run's.
    assert [s.local_date for s in send_slots(DS, "UTC", 23)] == [dt.date(2026, 3, 8)]


def test_bad_timezone_and_schedule_raise() -> None:
    for zone in ["Mars/Olympus_Mons", "", " UTC", "../etc/passwd", "europe/berlin", "localtime", "a" * 300]:
        with pytest.raises(ValueError, match="timezone"):
            send_slots(DS, zone, 7)
    with pytest.raises(ValueError, match="frequency"):
        due_slot(DS, "UTC", "hourly", 0, 7)
    with pytest.raises(ValueError, match="weekday"):
        due_slot(DS, "UTC", "weekly", 7, 7)


# -- text, links, tokens -----------------------------------------------------------------------------
def test_clean_text_strips_controls_and_keeps_scripts_and_emoji() -> None:
    # \t and \n and NEL (\x85) are whitespace -> one space; NUL, ESC, DEL, BOM and bidi overrides go.
    assert clean_text("Tab\there\x00nul\x1bESC\x7fdel\x85nel\n\nend\ufeff") == "Tab herenulESCdel nel end"
    assert clean_text("invoice\u202egpj.exe\u202c") == "invoicegpj.exe"
    assert clean_text("  שלום  עולם 👩‍💻 ") == "שלום עולם 👩‍💻"
    assert clean_text(None) == ""


def test_excerpt_cuts_at_a_word_boundary() -> None:
    text = "alpha beta gamma delta"  # 22 characters
    assert excerpt(text, 22) == text
    # Room for 13 characters plus "…": "alpha beta ga" -> back to the last space -> "alpha beta…".
    assert excerpt(text, 14) == "alpha beta…"
    # The cut falls just before a space: "alpha beta" is whole, kept as is.
    assert excerpt(text, 11) == "alpha beta…"
    # No space at all: cut inside a word, never between a letter and its accent (e + U+0301) nor
    # inside an emoji joined with U+200D: room for 6 keeps "abcdé", room for 5 would split é -> "abcd".
    assert excerpt("abcde\u0301fghij", 7) == "abcde\u0301…"
    assert excerpt("abcde\u0301fghij", 6) == "abcd…"
    assert excerpt("xy👩\u200d💻z", 4) == "xy…"  # "xy👩" would split the ZWJ sequence


def test_tracked_link() -> None:
    link = tracked_link(
        "https://Posts.example/a/b?q=1&utm_source=x#top", "i1", DS, "tok", "https://nf.example"
    )
    assert link == (
        "https://posts.example/a/b?q=1&utm_source=nightfeed&utm_medium=email"
        "&utm_campaign=digest-2026-03-07&nf_mid=tok#top"
    )
    fallback = "https://nf.example/items/i%2F1?utm_source=nightfeed&utm_medium=email&utm_campaign=digest-2026-03-07&nf_mid=tok"
    for hostile in [
        "javascript:alert(1)",
        "https://good.example@evil.example/",
        "https://x.example/a b",
        None,
        "/rel",
    ]:
        assert tracked_link(hostile, "i/1", DS, "tok", "https://nf.example") == fallback, hostile


def test_unsubscribe_token_is_hmac_sha256() -> None:
    # RFC 4231 test case 2: HMAC-SHA256(key="Jefe", "what do ya want for nothing?") = 5bdcc146bf60754e6a04...
    assert unsubscribe_token("what do ya want for nothing?", "Jefe") == "5bdcc146bf60754e6a042426089575c7"
    token = unsubscribe_token("u01", "a-long-enough-secret")
    assert verify_unsubscribe_token("u01", token, "a-long-enough-secret")
    assert not verify_unsubscribe_token("u02", token, "a-long-enough-secret")
    assert not verify_unsubscribe_token("u01", token, "another-long-secret!")


# -- messages ----------------------------------------------------------------------------------------
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
    unsubscribe = (
        f"https://nightfeed.example/unsubscribe?u=u01&t={unsubscribe_token('u01', CONFIG.unsubscribe_secret)}"
    )
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


# -- the stage ---------------------------------------------------------------------------------------
def world(tmp_path) -> tuple[Lake, pa.Table, pa.Table]:
    lake = Lake(str(tmp_path / "lake"))
    users = users_table(
        [
            user("u01"),  # daily, UTC: due at Sun 07:00Z
            user("u02", digest_opt_in=False),
            user("u03", email="not an address"),
            user("u04", timezone="Mars/Olympus_Mons"),
            user("u05", digest_frequency="hourly"),
            user("u06", digest_frequency="weekly", digest_weekday=0),  # Monday; UTC sends Sunday
            user("u07"),  # due, no candidates
            user("u08"),  # due, only 2 fresh candidates
            user("u09", digest_frequency="weekly", digest_weekday=0, timezone="Pacific/Kiritimati"),
            user("u10", digest_opt_in=None),
        ]
    )
    items = items_table([item(f"i{n:02d}", deleted=n == 9) for n in range(1, 13)])
    publish_candidates(
        lake,
        DS,
        [
            # Users are in shard crc32(user_id) % 2: u01, u02, u08, u09 in shard 0; u06 in shard 1.
            [
                # u01 in shuffled row order; i09 is deleted and i99 unknown, so the top 3 are i03, i01, i02.
                ("u01", 4, "i02"),
                ("u01", 1, "i03"),
                ("u01", 3, "i09"),
                ("u01", 2, "i01"),
                ("u01", 5, "i99"),
                ("u01", 6, "i04"),
                ("u02", 1, "i01"),
                ("u02", 2, "i02"),
                ("u02", 3, "i03"),
                # u08: i01, i02 fresh, i09 deleted -> 2 < 3. u09: i05, i06, i07 of four.
                ("u08", 1, "i01"),
                ("u08", 2, "i09"),
                ("u08", 3, "i02"),
                ("u09", 1, "i05"),
                ("u09", 2, "i06"),
                ("u09", 3, "i07"),
                ("u09", 4, "i08"),
            ],
            [
                ("u06", 1, "i10"),
                ("u06", 2, "i11"),
                ("u06", 3, "i12"),
            ],
        ],
    )
    return lake, users, items


def test_render_and_publish_digests_sends_to_due_users_and_counts_the_rest(tmp_path) -> None:
    lake, users, items = world(tmp_path)
    report = render_and_publish_digests(lake, DS, users, items, CONFIG)
    assert report.messages_written == 2
    assert report.users_total == 10
    assert report.skipped == {
        "opted_out": 2,  # u02, u10 (null counts as not opted in)
        "invalid_email": 1,
        "bad_timezone": 1,
        "bad_schedule": 1,
        "not_due": 1,
        "no_candidates": 1,
        "too_few_fresh_candidates": 1,
    }  # 2 sent + 8 skipped = 10 users
    manifest = lake.read_manifest(LakePaths.digests(DS))
    assert manifest["files"] == [MESSAGES_INDEX, "shard=000.jsonl", "shard=001.jsonl"]
    assert manifest["metadata"]["skipped"] == report.skipped
    records = published_records(lake, DS)
    by_user = {r["user_id"]: r for r in records}
    assert sorted(by_user) == ["u01", "u09"]
    assert by_user["u01"]["item_ids"] == ["i03", "i01", "i02"]
    assert by_user["u09"]["item_ids"] == ["i05", "i06", "i07"]
    assert by_user["u09"]["local_send_date"] == "2026-03-09"
    assert by_user["u09"]["send_at"] == "2026-03-08T17:00:00+00:00"
    kiritimati = parse(by_user["u09"]["raw"])
    assert kiritimati["Date"] == "Sun, 08 Mar 2026 17:00:00 +0000"
    assert kiritimati["Subject"] == "Your weekly Nightfeed digest, Mon 9 Mar: Title of i05"
    for record in records:
        msg = parse(record["raw"])
        assert msg["Message-ID"] == record["message_id"]
        assert msg["Subject"] == record["subject"]
        assert msg["To"] == record["to"] == f"{record['user_id']}@example.com"
    index = lake.read_parquet(f"{LakePaths.digests(DS)}/run={manifest['staging']}/{MESSAGES_INDEX}")
    assert sorted(zip(index["user_id"].to_pylist(), index["file"].to_pylist(), strict=True)) == [
        ("u01", "shard=000.jsonl"),
        ("u09", "shard=000.jsonl"),
    ]
    assert lake.read_bytes(f"{LakePaths.digests(DS)}/run={manifest['staging']}/shard=001.jsonl") == b""
    assert [n for n in lake.ls(f"{LakePaths.digests(DS)}/run={manifest['staging']}") if "_index" in n] == []


def test_shards_rendered_apart_publish_what_one_process_does(tmp_path) -> None:
    lake, users, items = world(tmp_path)
    render_and_publish_digests(lake, DS, users, items, CONFIG)
    together = {p.rsplit("/", 1)[1]: lake.read_bytes(p) for p in lake.manifest_files(LakePaths.digests(DS))}
    plan = plan_digests(lake, DS)
    assert [(p["shard"], p["num_shards"]) for p in plan] == [(0, 2), (1, 2)]
    assert len({p["staging"] for p in plan}) == 1
    # Shards finish in any order, each in its own task; nothing new is visible before the publish.
    results = [
        render_digest_shard(lake, DS, p["shard"], 2, p["staging"], users, items, CONFIG).summary()
        for p in reversed(plan)
    ]
    assert lake.read_manifest(LakePaths.digests(DS))["staging"] != plan[0]["staging"].rsplit("run=", 1)[1]
    assert [r["messages_written"] for r in results] == [0, 2]
    assert sum(r["users_total"] for r in results) == 10
    with pytest.raises(ValueError, match=r"digest shard results \[0\] do not cover 2 shards"):
        publish_digests(lake, DS, plan[0]["staging"], results[1:], CONFIG)
    report = publish_digests(lake, DS, plan[0]["staging"], results, CONFIG)
    apart = {p.rsplit("/", 1)[1]: lake.read_bytes(p) for p in lake.manifest_files(LakePaths.digests(DS))}
    assert apart == together
    assert report.messages_written == 2 and report.skipped["no_candidates"] == 1


def test_rerun_replaces_with_identical_bytes(tmp_path) -> None:
    lake, users, items = world(tmp_path)
    render_and_publish_digests(lake, DS, users, items, CONFIG)
    first = {p.rsplit("/", 1)[1]: lake.read_bytes(p) for p in lake.manifest_files(LakePaths.digests(DS))}
    render_and_publish_digests(lake, DS, users, items, CONFIG)
    second = {p.rsplit("/", 1)[1]: lake.read_bytes(p) for p in lake.manifest_files(LakePaths.digests(DS))}
    assert first == second
    assert [r["user_id"] for r in published_records(lake, DS)] == ["u01", "u09"]
    assert [n for n in lake.ls(LakePaths.digests(DS)) if n.endswith(".json")] == ["_MANIFEST.json"]


def test_items_sent_in_earlier_digests_are_not_repeated(tmp_path) -> None:
    lake = Lake(str(tmp_path / "lake"))
    users = users_table([user("u01"), user("u02")])
    items = items_table([item(f"i{n:02d}") for n in range(1, 8)])
    # 03-05: u01 gets i01..i03. 03-06: u02 gets i01..i03.
    publish_candidates(lake, dt.date(2026, 3, 5), [[("u01", r, f"i{r:02d}") for r in range(1, 5)]])
    publish_candidates(lake, dt.date(2026, 3, 6), [[("u02", r, f"i{r:02d}") for r in range(1, 5)]])
    # DS: u01 ranks i01..i06 -> i01..i03 sent on 03-05 -> i04, i05, i06. u02 ranks i01..i04 -> only i04 fresh.
    publish_candidates(
        lake,
        DS,
        [[("u01", r, f"i{r:02d}") for r in range(1, 7)] + [("u02", r, f"i{r:02d}") for r in range(1, 5)]],
    )
    assert render_and_publish_digests(lake, dt.date(2026, 3, 5), users, items, CONFIG).messages_written == 1
    assert render_and_publish_digests(lake, dt.date(2026, 3, 6), users, items, CONFIG).messages_written == 1
    report = render_and_publish_digests(lake, DS, users, items, CONFIG)
    assert report.skipped["too_few_fresh_candidates"] == 1
    assert {r["user_id"]: r["item_ids"] for r in published_records(lake, DS)} == {
        "u01": ["i04", "i05", "i06"]
    }
    # Looking back one run date only (03-06) forgets u01's 03-05 digest; u02's is still remembered.
    one_day = CONFIG.model_copy(update={"previous_digest_days": 1})
    report = render_and_publish_digests(lake, DS, users, items, one_day)
    assert {r["user_id"]: r["item_ids"] for r in published_records(lake, DS)} == {
        "u01": ["i01", "i02", "i03"]
    }


def test_dry_run_renders_a_sample_and_publishes_nothing(tmp_path) -> None:
    lake, users, items = world(tmp_path)
    report = render_and_publish_digests(lake, DS, users, items, CONFIG, dry_run_users=1)
    assert report.dry_run and report.messages_written == 0
    assert [m.user_id for m in report.messages] == ["u01"]
    assert parse(report.messages[0].raw)["Subject"] == "Your daily Nightfeed digest, Sun 8 Mar: Title of i03"
    assert not lake.is_published(LakePaths.digests(DS))
    summary = json.loads(json.dumps(report.to_dict()))
    assert summary["sample"] == [
        {
            "user_id": "u01",
            "message_id": report.messages[0].message_id,
            "subject": "Your daily Nightfeed digest, Sun 8 Mar: Title of i03",
            "item_ids": ["i03", "i01", "i02"],
            "send_at": "2026-03-08T07:00:00+00:00",
        }
    ]
    assert summary["messages_written"] == 0 and summary["files"] == []


def test_items_table_without_deleted_column(tmp_path) -> None:
    # The serving catalog holds live items only and has no "deleted" column: i09 is simply absent.
    lake, users, items = world(tmp_path)
    live = items.filter(pc.invert(items["deleted"])).drop(["deleted"])
    render_and_publish_digests(lake, DS, users, live, CONFIG)
    by_user = {r["user_id"]: r["item_ids"] for r in published_records(lake, DS)}
    assert by_user == {"u01": ["i03", "i01", "i02"], "u09": ["i05", "i06", "i07"]}


def test_preview_of_a_user_not_due(tmp_path) -> None:
    lake, users, items = world(tmp_path)
    # u06 is weekly on Mondays and UTC: not due in DS's window, so the preview shows its Sunday slot.
    out = preview_digest(lake, DS, "u06", users, items, CONFIG, tmp_path / "preview" / "u06.html")
    html = out.read_text(encoding="utf-8")
    assert "Your weekly digest &middot; Sun 8 Mar" in html
    assert [t for t in ["Title of i10", "Title of i11", "Title of i12"] if t in html] == [
        "Title of i10",
        "Title of i11",
        "Title of i12",
    ]
    with pytest.raises(ValueError, match="no fresh candidates"):
        preview_digest(lake, DS, "u07", users, items, CONFIG, tmp_path / "u07.html")
    html = preview_digest(lake, DS, "u02", users, items, CONFIG, tmp_path / "u02.html").read_text(
        encoding="utf-8"
    )
    assert [t for t in ["Title of i01", "Title of i02", "Title of i03"] if t in html] == [
        "Title of i01",
        "Title of i02",
        "Title of i03",
    ]
    with pytest.raises(ValueError, match="not in the users table"):
        preview_digest(lake, DS, "nobody", users, items, CONFIG, tmp_path / "x.html")


def test_bad_inputs_name_what_is_wrong(tmp_path) -> None:
    lake, users, items = world(tmp_path)
    with pytest.raises(ManifestError, match="candidates/ds=2026-03-01"):
        render_and_publish_digests(lake, dt.date(2026, 3, 1), users, items, CONFIG)
    twice = pa.concat_tables([users, users.slice(0, 1)])
    with pytest.raises(ValueError, match="rows 0 and 10 share user_id 'u01'"):
        render_and_publish_digests(lake, DS, twice, items, CONFIG)
    with pytest.raises(ValueError, match="items table lacks columns \\['url'\\]"):
        render_and_publish_digests(lake, DS, users, items.drop(["url"]), CONFIG)
    with pytest.raises(ValueError, match=r"DigestConfig\.sender"):
        render_and_publish_digests(lake, DS, users, items, CONFIG.model_copy(update={"sender": "nobody"}))
    with pytest.raises(ValueError, match=r"DigestConfig\.unsubscribe_url"):
        render_and_publish_digests(
            lake, DS, users, items, CONFIG.model_copy(update={"unsubscribe_url": "http://x.example/u"})
        )
    publish_candidates(lake, dt.date(2026, 3, 2), [[("u01", 1, "i01")], [("u01", 1, "i02")]])
    with pytest.raises(
        ValueError,
        match=r"user 'u01' has candidates in .*shard=001\.parquet \(shard 1 of 2\) but belongs to shard 0",
    ):
        render_and_publish_digests(lake, dt.date(2026, 3, 2), users, items, CONFIG)
