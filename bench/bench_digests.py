"""Digest rendering speed: messages/s per core of :class:`pipelines.delivery.digests.renderer.DigestRenderer`.

    python bench/bench_digests.py --messages 50000

Renders ``--messages`` digests of ``--items`` posts each in this process with one renderer, as a digest
shard does (rendering is single-threaded Python, so one process is one core): with the collector's pace of
``few_collections``, each message dropped once rendered (a shard writes it to its file and keeps none;
the 500 of the sample excepted). The posts come from a
synthetic catalog (English and international titles, a share of them long enough to be cut, so their
subjects are RFC 2047-encoded; summaries of 100 to 600 characters; up to six tags with repeats; URLs with
and without a query), and each digest draws its posts by popularity as a real shard shows them: post r of
``--catalog`` is drawn with weight 1/(r + 100)^1.6, the curve of the top-8 candidates of the 250,000
users of candidates shard 0 of the 1M-user x 1M-post world (21,218 distinct posts; the top 1,000 carry
80% of the showings). The renderer reuses what it rendered of a post (a bounded cache), so the rate
depends on how many digests share posts: the default of 50,000 digests is about one shard's digests at
1M users (4 shards; 23% of the default world's users get a digest on a day). Prints messages/s per core
from the CPU time (and the wall-time rate next to it, with the load average, since the machine is shared),
the post cache's hit rate, the CPU per step and the peak memory (``VmHWM``). A sample of the messages is
parsed back with ``email`` and compared with the subject and parts rendered.
"""

from __future__ import annotations

import argparse
import datetime as dt
import email
import itertools
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
from pipelines.delivery.digests.renderer import DigestRenderer, few_collections
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


def digests(
    rows: list[dict[str, Any]], messages: int, items: int, rng: random.Random
) -> list[tuple[str, list[dict[str, Any]]]]:
    """``messages`` users with ``items`` distinct posts each, drawn by popularity (post r of ``rows`` with
    weight 1/(r + 100)^1.6)."""
    weights = list(itertools.accumulate(1 / (rank + 100) ** 1.6 for rank in range(1, len(rows) + 1)))
    users = []
    for u in range(messages):
        picked: dict[str, dict[str, Any]] = {}
        while len(picked) < items:
            for row in rng.choices(rows, cum_weights=weights, k=items - len(picked)):
                picked.setdefault(row["item_id"], row)
        users.append((f"b{u:07d}", list(picked.values())))
    return users


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=50_000)
    parser.add_argument("--items", type=int, default=8, help="posts per digest")
    parser.add_argument("--catalog", type=int, default=21_218, help="distinct posts the digests draw from")
    parser.add_argument("--seed", type=int, default=15)
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    config = DigestConfig(items_per_digest=args.items)
    users = digests(catalog(args.catalog, rng), args.messages, args.items, rng)
    renderer = DigestRenderer(DS, config)

    every = max(1, len(users) // 500)  # the sample parsed back; the rest is dropped, as a shard writes it
    sample, encoded = [], 0
    load_before = os.getloadavg()[0]
    wall_started, cpu_started = time.perf_counter(), time.process_time()
    with few_collections():  # as a digest shard renders
        for n, (user_id, picked) in enumerate(users):
            message = renderer.message(user_id, f"{user_id}@example.com", "daily", SLOT, picked)
            encoded += not message.subject.isascii()
            if n % every == 0:
                sample.append(message)
    cpu, wall = time.process_time() - cpu_started, time.perf_counter() - wall_started
    load_after = os.getloadavg()[0]

    broken = []
    for message in sample:
        parsed = email.message_from_bytes(message.raw.encode("ascii"), policy=policy.default)
        if parsed["Subject"] != message.subject or len(list(parsed.iter_parts())) != 2:
            broken.append(message.user_id)
    messages = len(users)
    cache = renderer.cache_info()
    shown = messages * args.items
    print(
        f"{messages:,} digests of {args.items} posts ({encoded / messages:.0%} with a non-ASCII subject): "
        f"{messages / cpu:,.0f} messages/s per core (CPU time {cpu:.1f} s); "
        f"{messages / wall:,.0f} messages/s wall ({wall:.1f} s, load average {load_before:.2f} -> "
        f"{load_after:.2f} on {os.cpu_count()} CPUs)"
    )
    print(
        f"post cache: {cache.misses:,} distinct posts rendered for {shown:,} shown, hit rate "
        f"{cache.hits / (cache.hits + cache.misses):.1%}"
    )
    print(
        f"parsed back with email: {len(sample) - len(broken)} of {len(sample)} messages give their subject "
        "and parts"
    )
    per = {step: seconds / messages * 1e6 for step, seconds in renderer.seconds.items()}
    print(
        f"CPU per message: posts {per['posts']:,.0f} us (cache look-ups, renders of new posts, tokens), "
        f"bodies {per['bodies']:,.0f} us, headers and MIME {per['mime']:,.0f} us; peak memory "
        f"{gb(peak_memory())}"
    )


if __name__ == "__main__":
    main()
