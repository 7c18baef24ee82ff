"""Digest rendering speed: messages/s per core of :func:`pipelines.delivery.digests.message.render_message`.

    python bench/bench_digests.py --messages 20000

Renders ``--messages`` digests of ``--items`` posts each in this process (rendering is single-threaded
Python, so one process is one core), as a digest shard does: the shown posts
(:func:`~pipelines.delivery.digests.message.digest_item`: cleaned text, tracked links), then the bodies and
the MIME message. The posts are drawn from a synthetic catalog: English and international titles (a share
of them long enough to be cut, so their subjects are RFC 2047-encoded), summaries of 100 to 600
characters, up to six tags with repeats, URLs with and without a query. Prints messages/s per core from
the CPU time (and the wall-time rate next to it, with the load average, since the machine is shared), the
share of each step, and the peak memory (``VmHWM``). A sample of the messages is parsed back with ``email``
and compared with the subject and parts rendered.
"""

from __future__ import annotations

import argparse
import datetime as dt
import email
import os
import random
import sys
import time
from email import policy
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_support import gb, peak_memory

from pipelines.core.settings import DigestConfig
from pipelines.delivery.digests.links import message_token
from pipelines.delivery.digests.message import digest_item, render_bodies, render_message
from pipelines.delivery.digests.schedule import SendSlot

DS = dt.date(2026, 11, 22)
SLOT = SendSlot(dt.date(2026, 11, 23), dt.datetime(2026, 11, 23, 7, tzinfo=dt.UTC))
WORDS = [
    *("how", "we", "scaled", "postgres", "to", "a", "million", "users", "in", "one", "week", "without"),
    *("downtime", "rust", "python", "compilers", "kubernetes", "observability", "latency", "tail"),
    *("retries", "queues", "caching", "search", "ranking", "embeddings"),
]
INTERNATIONAL = ["Ünïcødé", "🚀", "שלום", "مرحبا", "日本語の記事", "Überblick", "naïve", "café"]
TAGS = ["python", "rust", "databases", "ml", "devops", "security", "frontend", "career"]


def catalog(n: int, rng: random.Random) -> list[dict[str, Any]]:
    """``n`` items-table rows with the columns a digest reads."""
    rows = []
    for i in range(n):
        words = rng.choices(WORDS, k=rng.randint(4, 16))
        if rng.random() < 0.3:
            words.insert(rng.randrange(len(words)), rng.choice(INTERNATIONAL))
        summary = " ".join(rng.choices(WORDS + INTERNATIONAL[:2], k=rng.randint(15, 90)))
        query = "?ref=feed&x=1" if rng.random() < 0.3 else ""
        rows.append(
            {
                "item_id": f"v{i:07d}",
                "title": " ".join(words).capitalize(),
                "summary": summary,
                "tags": rng.choices(TAGS, k=rng.randint(0, 6)),
                "source": f"source-{rng.randrange(500):03d}",
                "url": f"https://posts.example/{i}{query}",
            }
        )
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--items", type=int, default=8, help="posts per digest")
    parser.add_argument("--catalog", type=int, default=50_000)
    parser.add_argument("--seed", type=int, default=15)
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    config = DigestConfig(items_per_digest=args.items)
    rows = catalog(args.catalog, rng)
    users = [(f"b{u:07d}", rng.sample(rows, args.items)) for u in range(args.messages)]

    load_before, cpu = os.getloadavg()[0], {"items": 0.0, "bodies": 0.0, "messages": 0.0}
    wall_started = time.perf_counter()
    messages = []
    for user_id, picked in users:
        started = time.process_time()
        token = message_token(DS, user_id)
        shown = [digest_item(row, DS, token, config) for row in picked]
        cpu["items"] += time.process_time() - started
        messages.append(render_message(DS, user_id, f"{user_id}@example.com", "daily", SLOT, shown, config))
        cpu["messages"] += time.process_time() - started
    wall = time.perf_counter() - wall_started
    load_after = os.getloadavg()[0]
    sample = [
        (user_id, [digest_item(row, DS, message_token(DS, user_id), config) for row in picked])
        for user_id, picked in users[: max(1, args.messages // 10)]
    ]
    started = time.process_time()
    for user_id, shown in sample:
        render_bodies(DS, user_id, "daily", SLOT, shown, config)
    cpu["bodies"] = (time.process_time() - started) / len(sample) * len(messages)

    sample = messages[:: max(1, len(messages) // 500)]
    broken = []
    for message in sample:
        parsed = email.message_from_bytes(message.raw.encode("ascii"), policy=policy.default)
        if parsed["Subject"] != message.subject or len(list(parsed.iter_parts())) != 2:
            broken.append(message.user_id)
    total = cpu["messages"]
    encoded = sum(not m.subject.isascii() for m in messages) / len(messages)
    print(
        f"{len(messages):,} digests of {args.items} posts ({encoded:.0%} with a non-ASCII subject): "
        f"{len(messages) / total:,.0f} messages/s per core (CPU time {total:.1f} s); "
        f"{len(messages) / wall:,.0f} messages/s wall ({wall:.1f} s, load average {load_before:.2f} -> "
        f"{load_after:.2f} on {os.cpu_count()} CPUs)"
    )
    print(
        f"parsed back with email: {len(sample) - len(broken)} of {len(sample)} messages give their subject "
        "and parts"
    )
    per = {step: seconds / len(messages) * 1e6 for step, seconds in cpu.items()}
    mime = per["messages"] - per["items"] - per["bodies"]
    print(
        f"CPU per message: posts {per['items']:,.0f} us, bodies (templates) {per['bodies']:,.0f} us, "
        f"headers and MIME {mime:,.0f} us; peak memory {gb(peak_memory())}"
    )


if __name__ == "__main__":
    main()
