"""Reliability cases 1-3 (issue 13, "Security"): no default secrets in production, forgery-proof
unsubscribe links that can be rotated and expire, and 4xx (never 500) from the UI plugin for bad input."""

from __future__ import annotations

import datetime as dt
import hmac
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipelines.core.settings import LOCAL_UNSUBSCRIBE_SECRET, DigestConfig, Settings
from pipelines.delivery.digests.links import unsubscribe_token, verify_unsubscribe_token
from pipelines.delivery.digests.message import DigestConfigError
from pipelines.delivery.digests.shards import plan_digests, render_digest_shard
from tests.airflow_support import REPO, airflow_env, prepare_home
from tests.pipelines.delivery.digests.digest_world import DS, render_and_publish_digests, world
from tests.test_compose import REQUIRED_SECRETS

COMPOSE = REPO / "docker-compose.yaml"
OLD = "an-old-unsubscribe-secret-0123456789"
NEW = "a-new-unsubscribe-secret-9876543210"


def _service_env(name: str) -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())["services"][name]["environment"]


# -- case 1 ---------------------------------------------------------------------------------------------
def test_case_01_compose_refuses_to_start_without_its_secrets_and_passwords() -> None:
    text = COMPOSE.read_text()
    for name in REQUIRED_SECRETS:
        # ``$${NAME}`` is Compose's escape for a shell variable of the container, not an interpolation.
        uses = re.findall(r"(?<!\$)\$\{" + name + r"(:?[-?+])?([^}]*)\}", text)
        assert uses, f"{name} is not used"
        for operator, message in uses:
            assert operator == ":?" and message.strip(), f"{name} must be required with a message: {uses}"
    for fixed in ("change-me-nightfeed-jwt-secret", "change-me-nightfeed-api-secret", "USER_PASSWORD:-"):
        assert fixed not in text
    readme = (REPO / "README.md").read_text()
    for name in REQUIRED_SECRETS:
        assert name in readme, f"README does not say how to set {name}"
    assert "openssl rand" in readme


# -- case 2 ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "mode",
    [{"warehouse": "bigquery", "bigquery_project": "p"}, {"lake": "gs://bucket/prefix"}],
    ids=["bigquery", "gcs-lake"],
)
def test_case_02_production_refuses_to_render_digests_with_the_built_in_secret(
    tmp_path: Path, mode: dict[str, str]
) -> None:
    settings = Settings(data_dir=tmp_path, **mode)
    assert settings.production and settings.digest.production
    assert settings.digest.unsubscribe_secret == LOCAL_UNSUBSCRIBE_SECRET
    lake, users, items = world(tmp_path)
    plan = plan_digests(lake, DS)
    with pytest.raises(DigestConfigError, match="unsubscribe_secret") as raised:
        render_digest_shard(
            lake, DS, 0, plan[0]["num_shards"], plan[0]["staging"], users, items, settings.digest
        )
    assert "NIGHTFEED_DIGEST__UNSUBSCRIBE_SECRET" in raised.value.hint
    # A secret of one's own, or the local mode, renders.
    own = settings.with_overrides({"digest": {"unsubscribe_secret": NEW}})
    assert own.digest.production
    render_digest_shard(lake, DS, 0, plan[0]["num_shards"], plan[0]["staging"], users, items, own.digest)
    assert not Settings(data_dir=tmp_path).production


def test_case_02_tokens_carry_a_key_id_and_an_expiry_and_keep_verifying_through_a_rotation() -> None:
    before = DigestConfig(unsubscribe_secret=OLD, unsubscribe_key_id="k1")
    after = DigestConfig(
        unsubscribe_secret=NEW, unsubscribe_key_id="k2", unsubscribe_previous_keys={"k1": OLD}
    )
    sent = unsubscribe_token("u01", DS, before)
    assert sent.startswith("k1.20260605.")  # key id, ds + 90 days
    # New links use the newest key; links sent with the old one keep working in the grace period.
    assert unsubscribe_token("u01", DS, after).startswith("k2.")
    assert verify_unsubscribe_token("u01", sent, after, DS + dt.timedelta(days=30))
    # Once the old key is dropped, or the link is past its expiry, it no longer verifies.
    dropped = DigestConfig(unsubscribe_secret=NEW, unsubscribe_key_id="k2")
    assert not verify_unsubscribe_token("u01", sent, dropped, DS)
    assert not verify_unsubscribe_token("u01", sent, after, DS + dt.timedelta(days=91))
    # Nothing can be minted: another user, a moved expiry or a swapped key id fail.
    key, expires, mac = sent.split(".")
    assert not verify_unsubscribe_token("u02", sent, after, DS)
    assert not verify_unsubscribe_token("u01", f"{key}.20991231.{mac}", after, DS)
    assert not verify_unsubscribe_token("u01", f"k2.{expires}.{mac}", after, DS)
    assert not verify_unsubscribe_token("u01", "garbage", after, DS)


def test_case_02_verification_compares_macs_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = hmac.compare_digest
    monkeypatch.setattr(hmac, "compare_digest", lambda a, b: calls.append((a, b)) or real(a, b))
    config = DigestConfig(unsubscribe_secret=NEW)
    token = unsubscribe_token("u01", DS, config)
    assert verify_unsubscribe_token("u01", token, config, DS)
    assert not verify_unsubscribe_token("u01", token[:-1] + "0", config, DS)
    assert len(calls) == 2


def test_case_02_a_rerun_of_the_same_night_writes_identical_bytes(tmp_path: Path) -> None:
    config = DigestConfig(items_per_digest=3, min_fresh_candidates=3, unsubscribe_secret=NEW)
    runs = []
    for attempt in range(2):
        lake, users, items = world(tmp_path / str(attempt))
        render_and_publish_digests(lake, DS, users, items, config)
        runs.append([lake.read_bytes(p) for p in lake.manifest_files(f"digests/ds={DS}") if "jsonl" in p])
    assert runs[0] == runs[1] and runs[0]


def test_case_02_compose_passes_the_unsubscribe_secret() -> None:
    for service in ("airflow-worker", "airflow-scheduler", "airflow-apiserver"):
        value = str(_service_env(service).get("NIGHTFEED_DIGEST__UNSUBSCRIBE_SECRET", ""))
        assert value.startswith("${NIGHTFEED_UNSUBSCRIBE_SECRET:?"), (service, value)


# -- case 3 ---------------------------------------------------------------------------------------------
_PLUGIN_SCRIPT = r"""
import json
from fastapi.testclient import TestClient
from airflow.api_fastapi.app import init_auth_manager
from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser
from nightfeed_airflow.candidates_view import app

manager = init_auth_manager()
client = TestClient(app, raise_server_exceptions=False)
out = {}
for role in ("admin", "wizard"):
    token = manager.generate_jwt(SimpleAuthManagerUser(username="admin", role=role))
    for path in ("/?user_id=u1&ds=9999-99-99", "/api/candidates?user_id=u1&ds=2026-02-30", "/?user_id=u1"):
        out[f"{role} {path}"] = client.get(path, headers={"Authorization": f"Bearer {token}"}).status_code
print(json.dumps(out))
"""


@pytest.mark.airflow
def test_case_03_a_ds_that_is_no_date_and_a_token_with_an_unknown_role_get_4xx(tmp_path: Path) -> None:
    home = prepare_home(tmp_path / "airflow_home")
    env = airflow_env(home, tmp_path / "data", AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS="admin:admin")
    proc = subprocess.run(
        [sys.executable, "-c", _PLUGIN_SCRIPT], env=env, cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    status = json.loads(proc.stdout.strip().splitlines()[-1])
    assert status["admin /?user_id=u1&ds=9999-99-99"] == 400
    assert status["admin /api/candidates?user_id=u1&ds=2026-02-30"] == 400
    assert status["admin /?user_id=u1"] == 200
    for path in ("/?user_id=u1&ds=9999-99-99", "/api/candidates?user_id=u1&ds=2026-02-30", "/?user_id=u1"):
        assert status[f"wizard {path}"] == 403, status
