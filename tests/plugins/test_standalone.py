"""Against one running ``airflow standalone`` (started once, ~20 s): the candidates UI plugin behind
Airflow's authentication, REST-side param validation, and a backfill of the features DAG over 3 days.

The lake gets a small hand-written candidates fixture (two published run dates and one unpublished
staging folder); the warehouse gets a tiny synthetic world for the backfill.
"""

from __future__ import annotations

import datetime as dt
import html
import json
import subprocess
import sys
import urllib.parse
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from pipelines.core.lake import Lake
from pipelines.core.paths import LakePaths
from pipelines.core.schema import CANDIDATES
from tests.airflow_support import REPO, Standalone, airflow_env, run_airflow, standalone, wait_for

pytestmark = [pytest.mark.airflow, pytest.mark.slow]

# The world ends well before today, so the run the scheduler creates when the features DAG is unpaused
# (the latest daily interval) finds no events and cannot touch the backfilled days.
WORLD_END = (dt.datetime.now(dt.UTC).date() - dt.timedelta(days=10)).isoformat()
BACKFILL_DAYS = [(dt.date.fromisoformat(WORLD_END) - dt.timedelta(days=n)).isoformat() for n in (2, 1, 0)]

OLD_DS, NEW_DS, UNPUBLISHED_DS = "2026-10-01", "2026-10-02", "2026-10-03"
NUM_SHARDS = 2
ALICE, BOB, NOBODY = "u0000001", "u0000002", "u0009999"
# Item titles carry markup and an ampersand: the page must show them as text.
ITEMS = {
    "p0000011": "Rust & <b>WASM</b> in production",
    "p0000012": "A practical guide to pytest",
    "p0000013": "Ten asyncio tips",
    "p0000014": "Understanding DuckDB internals",
    "p0000015": "Old news about Go",
}
# (user, rank, item, score, retrieval score, reason) per run date; the newest published ds is NEW_DS.
LISTS = {
    OLD_DS: [(ALICE, 1, "p0000015", 0.9, 0.8, "ranked")],
    NEW_DS: [
        (ALICE, 1, "p0000011", 2.5, 0.91, "ranked"),
        (ALICE, 2, "p0000014", 1.75, 0.62, "explore"),
        (ALICE, 3, "p0000012", 1.25, 0.88, "ranked"),
        (BOB, 1, "p0000013", 0.5, 0.4, "fallback"),
    ],
    UNPUBLISHED_DS: [(ALICE, 1, "p0000013", 9.0, 0.99, "ranked")],
}


def shard(user_id: str) -> int:
    return zlib.crc32(user_id.encode()) % NUM_SHARDS


def publish_fixture(lake: Lake) -> None:
    for ds, rows in LISTS.items():
        day = dt.date.fromisoformat(ds)
        staging = lake.begin_publish(LakePaths.candidates(day))
        files = []
        for s in range(NUM_SHARDS):
            mine = [r for r in rows if shard(r[0]) == s]
            table = pa.table(
                {
                    "user_id": [r[0] for r in mine],
                    "rank": [r[1] for r in mine],
                    "item_id": [r[2] for r in mine],
                    "score": [r[3] for r in mine],
                    "retrieval_score": [r[4] for r in mine],
                    "reason": [r[5] for r in mine],
                },
                schema=CANDIDATES,
            )
            lake.write_parquet(f"{staging}/{LakePaths.shard_file(s)}", table)
            files.append(LakePaths.shard_file(s))
        publish_inputs(lake, day)
        if ds != UNPUBLISHED_DS:
            lake.publish(LakePaths.candidates(day), staging, files, metadata={"num_shards": NUM_SHARDS})


def publish_inputs(lake: Lake, ds: dt.date) -> None:
    items = pa.table(
        {
            "item_id": list(ITEMS),
            "title": list(ITEMS.values()),
            "summary": [f"About {title}." for title in ITEMS.values()],
            "tags": [["rust"], ["pytest"], ["asyncio"], ["duckdb"], ["go"]],
            "source": ["source-001"] * len(ITEMS),
            "url": [f"https://posts.example/{item}" for item in ITEMS],
        }
    )
    profiles = pa.table(
        {
            "user_id": [ALICE, BOB],
            "email": ["alice@example.com", "bob@example.com"],
            "digest_opt_in": [True, True],
            "digest_frequency": ["daily", "daily"],
            "digest_weekday": pa.array([0, 0], pa.int64()),
            "timezone": ["UTC", "Europe/Berlin"],
        }
    )
    staging = lake.begin_publish(LakePaths.inputs(ds))
    lake.write_parquet(f"{staging}/items.parquet", items)
    lake.write_parquet(f"{staging}/profiles.parquet", profiles)
    lake.publish(LakePaths.inputs(ds), staging, ["items.parquet", "profiles.parquet"])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Standalone]:
    base = tmp_path_factory.mktemp("standalone")
    data_dir = base / "data"
    world = subprocess.run(
        [sys.executable, "-m", "pipelines", "world", "--scale", "tiny", "--end-date", WORLD_END],
        env=airflow_env(base / "airflow_home", data_dir),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert world.returncode == 0, world.stderr[-4000:]
    publish_fixture(Lake(str(data_dir / "lake")))
    with standalone(base / "airflow_home", data_dir) as running:
        yield running


@pytest.fixture(scope="module")
def token(server: Standalone) -> str:
    return server.token()


def page(server: Standalone, query: dict[str, str], **auth: Any) -> tuple[int, str, dict[str, str]]:
    return server.request("GET", "/nightfeed/?" + urllib.parse.urlencode(query), **auth)


# -- authentication -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "path",
    ["/nightfeed/", "/nightfeed/api/candidates?user_id=u0000001", "/nightfeed/digest?user_id=u0000001"],
)
def test_every_route_rejects_requests_without_a_token(server: Standalone, path: str) -> None:
    status, body, _ = server.request("GET", path)
    assert status == 401, body
    assert "p0000011" not in body


def test_a_forged_token_is_rejected(server: Standalone) -> None:
    status, body, _ = page(server, {"user_id": ALICE}, token="eyJhbGciOiJIUzUxMiJ9.e30.bm90LXNpZ25lZA")
    assert status in (401, 403), body
    assert "p0000011" not in body


def test_the_ui_cookie_authenticates_like_the_header(server: Standalone, token: str) -> None:
    # Inside the Airflow UI the page is framed and the browser sends Airflow's _token cookie.
    status, body, _ = page(server, {"user_id": ALICE}, cookies={"_token": token})
    assert status == 200, body
    assert "p0000011" in body


def test_a_token_with_an_unknown_role_is_refused_not_a_server_error(server: Standalone) -> None:
    # Signed with the server's own JWT secret, so only the role is wrong.
    mint = subprocess.run(
        [
            sys.executable,
            "-c",
            "from airflow.api_fastapi.app import init_auth_manager;"
            "from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser as U;"
            "print(init_auth_manager().generate_jwt(U(username='admin', role='wizard')))",
        ],
        env=server.env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert mint.returncode == 0, mint.stderr[-3000:]
    status, body, _ = page(server, {"user_id": ALICE}, token=mint.stdout.strip().splitlines()[-1])
    assert status == 403, body
    assert "p0000011" not in body


# -- content --------------------------------------------------------------------------------------------
def candidate_rows(body: str) -> list[list[str]]:
    table = body.split('<table id="candidates">', 1)[1].split("</table>", 1)[0]
    rows = []
    for chunk in table.split("<tr>")[2:]:
        cells = [c.split("</td>", 1)[0].strip() for c in chunk.split("<td")[1:]]
        rows.append([c.split(">", 1)[1] for c in cells])
    return rows


def test_page_shows_the_users_newest_published_list_in_rank_order(server: Standalone, token: str) -> None:
    status, body, _ = page(server, {"user_id": ALICE}, token=token)
    assert status == 200, body
    # NEW_DS is the newest published date; UNPUBLISHED_DS has only a staging folder and must not show.
    assert f"<strong>{NEW_DS}</strong> (newest published)" in body
    assert candidate_rows(body) == [
        ["1", "p0000011", html.escape(ITEMS["p0000011"], quote=True), "2.5000", "ranked", "0.9100"],
        ["2", "p0000014", html.escape(ITEMS["p0000014"], quote=True), "1.7500", "explore", "0.6200"],
        ["3", "p0000012", html.escape(ITEMS["p0000012"], quote=True), "1.2500", "ranked", "0.8800"],
    ]
    assert "<b>WASM</b>" not in body, "titles must be escaped"
    assert "p0000013" not in body, "BOB's and the unpublished run's items are not ALICE's"


def test_an_older_run_date_can_be_chosen(server: Standalone, token: str) -> None:
    status, body, _ = page(server, {"user_id": ALICE, "ds": OLD_DS}, token=token)
    assert status == 200
    assert [row[1] for row in candidate_rows(body)] == ["p0000015"]


@pytest.mark.parametrize("ds", ["9999-99-99", "2026-02-30"])
def test_a_ds_that_is_no_calendar_date_is_a_bad_request(server: Standalone, token: str, ds: str) -> None:
    status, body, _ = page(server, {"user_id": ALICE, "ds": ds}, token=token)
    assert status == 400, body
    assert "is not a calendar date" in body


def test_unknown_user_gets_an_empty_answer(server: Standalone, token: str) -> None:
    status, body, _ = page(server, {"user_id": NOBODY}, token=token)
    assert status == 200
    assert f"No candidates for <strong>{NOBODY}</strong>" in body


def test_json_endpoint(server: Standalone, token: str) -> None:
    status, body, _ = server.request("GET", f"/nightfeed/api/candidates?user_id={BOB}", token=token)
    assert status == 200, body
    answer = json.loads(body)
    assert answer["ds"] == NEW_DS and answer["user_id"] == BOB
    assert answer["candidates"] == [
        {
            "rank": 1,
            "item_id": "p0000013",
            "title": ITEMS["p0000013"],
            "score": 0.5,
            "reason": "fallback",
            "retrieval_score": pytest.approx(0.4),
        }
    ]


def test_digest_preview_is_served_sandboxed(server: Standalone, token: str) -> None:
    status, body, headers = server.request("GET", f"/nightfeed/digest?user_id={ALICE}", token=token)
    assert status == 200, body
    assert (
        headers.get("content-security-policy") == "sandbox"
        or headers.get("Content-Security-Policy") == "sandbox"
    )
    assert "A practical guide to pytest" in body
    assert "<b>WASM</b>" not in body


def test_plugin_is_listed_with_its_menu_entry(server: Standalone, token: str) -> None:
    status, body, _ = server.request("GET", "/api/v2/plugins", token=token)
    assert status == 200, body
    plugin = next(p for p in json.loads(body)["plugins"] if p["name"] == "nightfeed")
    assert plugin["fastapi_apps"][0]["url_prefix"] == "/nightfeed"
    assert plugin["external_views"][0]["href"] == "nightfeed/"


# -- REST trigger and backfill --------------------------------------------------------------------------
def dag_known(server: Standalone, token: str, dag_id: str) -> bool:
    return server.request("GET", f"/api/v2/dags/{dag_id}", token=token)[0] == 200


def backfills(server: Standalone, token: str) -> list[dict[str, Any]]:
    status, body, _ = server.request("GET", "/api/v2/backfills?dag_id=nightfeed_features", token=token)
    assert status == 200, body
    return json.loads(body)["backfills"]


def test_rest_trigger_with_a_bad_param_is_refused(server: Standalone, token: str) -> None:
    wait_for(lambda: dag_known(server, token, "nightfeed_nightly"), 90, what="nightfeed_nightly parsed")
    body = {"logical_date": None, "conf": {"num_shards": 0, "run_date": NEW_DS}}
    status, answer, _ = server.request("POST", "/api/v2/dags/nightfeed_nightly/dagRuns", body, token=token)
    assert status == 400, answer
    assert "num_shards" in answer
    status, runs, _ = server.request("GET", "/api/v2/dags/nightfeed_nightly/dagRuns", token=token)
    assert json.loads(runs)["total_entries"] == 0


def test_backfill_builds_one_feature_partition_per_day(server: Standalone, token: str) -> None:
    wait_for(lambda: dag_known(server, token, "nightfeed_features"), 90, what="nightfeed_features parsed")
    # Created while the DAG is still paused: unpausing makes the scheduler write a run of its own at once,
    # and two writers upgrading their SQLite locks together fail immediately instead of waiting.
    create = [
        "backfill",
        "create",
        "--dag-id",
        "nightfeed_features",
        "--from-date",
        BACKFILL_DAYS[0],
        "--to-date",
        BACKFILL_DAYS[-1],
        "--max-active-runs",
        "3",
    ]
    for attempt in range(3):
        proc = run_airflow(create, server.env, check=False)
        if proc.returncode == 0:
            break
        assert "database is locked" in proc.stderr and not backfills(server, token), proc.stderr[-3000:]
        if attempt == 2:
            raise AssertionError(proc.stderr[-3000:])
    status, answer, _ = server.request(
        "PATCH", "/api/v2/dags/nightfeed_features", {"is_paused": False}, token=token
    )
    assert status == 200, answer

    def finished_backfill_runs() -> list[dict] | None:
        status, body, _ = server.request(
            "GET", "/api/v2/dags/nightfeed_features/dagRuns?run_type=backfill&limit=50", token=token
        )
        runs = json.loads(body)["dag_runs"] if status == 200 else []
        done = [r for r in runs if r["state"] in ("success", "failed")]
        return runs if len(runs) == len(BACKFILL_DAYS) and len(done) == len(runs) else None

    runs = wait_for(finished_backfill_runs, 240, interval=3, what="3 finished backfill runs")
    assert sorted(r["logical_date"][:10] for r in runs) == BACKFILL_DAYS
    assert {r["state"] for r in runs} == {"success"}, server.log_tail()

    # Each run announced its own day on the features Asset, which is what schedules the nightly DAG.
    status, body, _ = server.request("GET", "/api/v2/assets/events?limit=50", token=token)
    events = [e for e in json.loads(body)["asset_events"] if e["uri"].startswith("nightfeed://features")]
    assert (
        sorted(e["extra"]["ds"] for e in events if e["source_run_id"].startswith("backfill")) == BACKFILL_DAYS
    )

    data_dir = Path(server.env["NIGHTFEED_DATA_DIR"])
    check = subprocess.run(
        [
            sys.executable,
            "-c",
            "import json, sys; from pipelines.core.warehouse import DuckDBWarehouse;"
            "w = DuckDBWarehouse(sys.argv[1], read_only=True);"
            "tables = ('user_features', 'item_features');"
            "print(json.dumps({t: w.partitions(t) for t in tables}, default=str))",
            str(data_dir / "warehouse.duckdb"),
        ],
        cwd=REPO,
        env=server.env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert check.returncode == 0, check.stderr[-3000:]
    partitions = json.loads(check.stdout.strip().splitlines()[-1])
    assert partitions == {"user_features": BACKFILL_DAYS, "item_features": BACKFILL_DAYS}
