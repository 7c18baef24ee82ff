"""Google credentials from the ``google_cloud_default`` Airflow connection reach the lake and BigQuery.

A throwaway service-account key (a fresh RSA key, never sent anywhere) is put in the connection as the
Google provider's ``keyfile_dict`` extra; a fresh interpreter with the tests' Airflow environment reads
it the way a task does and opens the run context on a ``gs://`` lake and a BigQuery warehouse (building
the clients asks nothing of Google).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.airflow_support import airflow_env, script_result

pytestmark = pytest.mark.airflow

EMAIL = "nightfeed-runner@nightfeed-test.iam.gserviceaccount.com"

_SCRIPT = r"""
import json
import airflow.sdk  # Airflow puts its plugins folder on sys.path
from nightfeed_airflow.gcp import connection_credentials
from nightfeed_airflow.runtime import call_job
from pipelines.core import jobs
from pipelines.core.context import RunContext
from pipelines.core.warehouse.bigquery import bigquery_client

out = {}
try:
    creds = connection_credentials()
except ValueError as exc:
    creds, out["credentials_error"] = None, str(exc)
out["email"] = getattr(creds, "service_account_email", None)
out["scopes"] = list(getattr(creds, "scopes", None) or [])
if creds is not None:
    ctx = RunContext.create("2026-11-20", {}, creds)
    out["lake_uses_them"] = ctx.lake.fs.credentials.credentials is creds
    client = bigquery_client("nightfeed-test", "US", None, ctx.credentials)
    out["bigquery_uses_them"] = client._credentials is creds
if creds is None:  # with usable credentials the job would write to the bucket (the night's lease)
    try:
        call_job(jobs.PLAN_SHARDS, "2026-11-20", {})
        out["job"] = "ran"
    except Exception as exc:
        out["job"] = f"{type(exc).__name__}: {exc}"
print("RESULT " + json.dumps(out))
"""


def service_account_key() -> dict[str, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    return {
        "type": "service_account",
        "project_id": "nightfeed-test",
        "private_key_id": "0123456789abcdef",
        "private_key": pem,
        "client_email": EMAIL,
        "client_id": "1",
        "token_uri": "https://oauth2.googleapis.com/token",
    }


def run(tmp_path: Path, connection: dict[str, Any] | None, **settings: str) -> dict[str, Any]:
    extra = {"AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT": json.dumps(connection)} if connection else {}
    return script_result(
        _SCRIPT, airflow_env(tmp_path / "airflow_home", tmp_path / "data", **extra, **settings)
    )


def test_a_connection_key_reaches_the_lake_and_bigquery(tmp_path: Path) -> None:
    connection = {
        "conn_type": "google_cloud_platform",
        "extra": {
            "keyfile_dict": json.dumps(service_account_key()),
            "scope": "https://x.test/a, https://x.test/b",
        },
    }
    result = run(tmp_path, connection, NIGHTFEED_LAKE="gs://nightfeed-test-bucket/lake")
    assert result["email"] == EMAIL
    assert result["scopes"] == ["https://x.test/a", "https://x.test/b"]
    assert result["lake_uses_them"] and result["bigquery_uses_them"]


def test_without_a_connection_the_clients_use_application_default_credentials(tmp_path: Path) -> None:
    result = run(tmp_path, None)
    assert result["email"] is None and "lake_uses_them" not in result
    # The embedded default needs no credentials: whatever the job says, it is not about a connection.
    assert "google_cloud_default" not in result["job"]


def test_an_unusable_key_fails_the_task_without_retries(tmp_path: Path) -> None:
    connection = {"conn_type": "google_cloud_platform", "extra": {"keyfile_dict": "{not json"}}
    result = run(tmp_path, connection)
    assert result["job"].startswith("AirflowFailException: plan_shards for ds=2026-11-20 cannot succeed")
    assert "connection google_cloud_default: its service-account key cannot be used" in result["job"]
