"""The shard renderer: posts rendered once and reused give every digest its own tokens and numbers, the
same bytes as a renderer that starts afresh, and the bodies the templates render; its cache is bounded."""

from __future__ import annotations

import datetime as dt
import gc
import random
import weakref
from urllib.parse import urlencode

import pytest

from pipelines.core.settings import DigestConfig
from pipelines.delivery.digests.links import message_token
from pipelines.delivery.digests.renderer import DigestRenderer, few_collections
from pipelines.delivery.digests.schedule import SendSlot
from tests.pipelines.delivery.digests.digest_world import DS, UTC, item, parse

SLOTS = [
    SendSlot(dt.date(2026, 3, 8), dt.datetime(2026, 3, 8, 7, tzinfo=UTC)),
    SendSlot(dt.date(2026, 3, 7), dt.datetime(2026, 3, 7, 23, 30, tzinfo=UTC)),
]
CONFIG = DigestConfig(items_per_digest=12)
POSTS = [
    item(
        f"i{n:02d}",
        title=["Short", "Ünïcødé 🚀 headline about compilers " * n, "<b>bold</b> & co"][n % 3],
        summary="A summary that wraps over several lines of the plain-text body. " * (n % 4),
        tags=[["python"], [], ["rust", "ml", "Ünïcødé"]][n % 3],
        source=None if n % 5 == 0 else f"source-{n:03d}",
        url=[f"https://posts.example/{n}", f"https://posts.example/{n}?q=1#part", "javascript:x"][n % 3],
    )
    for n in range(1, 16)
]


def bodies(raw: str) -> tuple[str, str]:
    msg = parse(raw)
    text, html = (msg.get_body((kind,)).get_content() for kind in ("plain", "html"))
    return text.replace("\r\n", "\n"), html.replace("\r\n", "\n")


def digests(seed: int, count: int) -> list[tuple[str, str, SendSlot, list[dict]]]:
    rng = random.Random(seed)
    return [
        (
            f"u{u:02d}",
            rng.choice(["daily", "weekly"]),
            rng.choice(SLOTS),
            rng.sample(POSTS, rng.randint(1, 12)),
        )
        for u in range(count)
    ]


def test_two_users_sharing_a_post_get_their_own_tokens() -> None:
    renderer = DigestRenderer(DS, CONFIG)
    shared = item("s1", title="Shared post", url="https://posts.example/shared#top")
    first = renderer.message("u01", "u01@example.com", "daily", SLOTS[0], [shared, POSTS[1]])
    second = renderer.message("u02", "u02@example.com", "daily", SLOTS[0], [POSTS[2], shared])
    assert renderer.cache_info().hits == 1
    for message, own, other in [(first, "u01", "u02"), (second, "u02", "u01")]:
        text, html = bodies(message.raw)
        for body in (text, html):
            link = (
                f"https://posts.example/shared?utm_source=nightfeed&{{}}nf_mid={message_token(DS, own)}#top"
            )
            assert link.format("utm_medium=email&utm_campaign=digest-2026-03-07&") in body.replace(
                "&amp;", "&"
            )
            assert body.count(f"nf_mid={message_token(DS, own)}") == {text: 2, html: 4}[body]
            assert message_token(DS, other) not in body
    assert "\n1. Shared post\n" in bodies(first.raw)[0] and "\n2. Shared post\n" in bodies(second.raw)[0]


def test_a_renderer_reusing_posts_writes_the_bytes_of_a_fresh_one_and_the_templates_bodies() -> None:
    renderer = DigestRenderer(DS, CONFIG)
    for user_id, frequency, slot, posts in digests(15, 40):
        message = renderer.message(user_id, f"{user_id}@example.com", frequency, slot, posts)
        fresh = DigestRenderer(DS, CONFIG).message(user_id, f"{user_id}@example.com", frequency, slot, posts)
        assert message == fresh
        subject, text, html = DigestRenderer(DS, CONFIG).bodies(user_id, frequency, slot, posts)
        assert parse(message.raw)["Subject"] == subject == message.subject
        assert bodies(message.raw) == (text, html)
    assert renderer.cache_info().hits > renderer.cache_info().misses


def test_the_post_cache_is_bounded_and_evicting_changes_no_byte() -> None:
    small, large = DigestRenderer(DS, CONFIG, post_cache_size=3), DigestRenderer(DS, CONFIG)
    for user_id, frequency, slot, posts in digests(16, 20):
        args = (user_id, f"{user_id}@example.com", frequency, slot, posts)
        assert small.message(*args) == large.message(*args)
        assert small.cache_info().currsize <= 3
    assert large.cache_info().currsize == len({p["item_id"] for *_, posts in digests(16, 20) for p in posts})


def test_a_post_changed_under_the_same_id_is_rendered_again() -> None:
    renderer = DigestRenderer(DS, CONFIG)
    before = renderer.message("u01", "u01@example.com", "daily", SLOTS[0], [POSTS[0]])
    edited = {**POSTS[0], "title": "A corrected title"}
    after = renderer.message("u01", "u01@example.com", "daily", SLOTS[0], [edited])
    assert "A corrected title" in bodies(after.raw)[0] and before.raw != after.raw


def test_unsubscribe_lines_of_user_ids_of_any_width_and_quoting_are_the_templates_lines() -> None:
    renderer = DigestRenderer(DS, CONFIG)
    for user_id in ["u1", "u2", "a b+c/é&=?", "x" * 70, "~.-_"]:
        message = renderer.message(user_id, "u@example.com", "weekly", SLOTS[1], POSTS[:3])
        fresh = DigestRenderer(DS, CONFIG).message(user_id, "u@example.com", "weekly", SLOTS[1], POSTS[:3])
        assert message == fresh
        assert (
            bodies(message.raw)
            == DigestRenderer(DS, CONFIG).bodies(user_id, "weekly", SLOTS[1], POSTS[:3])[1:]
        )
        assert f"?{urlencode({'u': user_id})}&t=" in parse(message.raw)["List-Unsubscribe"]


def test_few_collections_slows_the_collector_for_its_block_only_and_restores_it_after_an_error() -> None:
    before = gc.get_threshold()
    with few_collections(threshold=123_456):
        assert gc.get_threshold() == (123_456, *before[1:])
        cycle: list[object] = []
        cycle.append(cycle)
        ref = weakref.ref(_Node(cycle))
    assert gc.get_threshold() == before
    gc.collect()
    assert ref() is None  # cycles made in the block are still collected
    with pytest.raises(RuntimeError), few_collections(threshold=99_999):
        raise RuntimeError("a failed render")
    assert gc.get_threshold() == before


class _Node:
    def __init__(self, payload: object) -> None:
        self.payload, self.me = payload, self
