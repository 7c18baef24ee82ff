"""The digest stage: due users get one message each, the rest are counted, shards publish together."""

from __future__ import annotations

import datetime as dt
import json

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from pipelines.core.lake import Lake, ManifestError
from pipelines.core.paths import LakePaths
from pipelines.delivery.digests.index import MESSAGES_INDEX
from pipelines.delivery.digests.shards import plan_digests, publish_digests, render_digest_shard
from tests.pipelines.delivery.digests.digest_world import (
    CONFIG,
    DS,
    item,
    items_table,
    parse,
    publish_candidates,
    published_records,
    render_and_publish_digests,
    user,
    users_table,
    world,
)


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
        "render_error": 0,
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
