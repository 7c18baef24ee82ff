"""docker-compose.yaml: valid against the Compose specification, internally consistent, production env set.

There is no Docker engine in CI, so the file is checked with ``check-jsonschema``'s bundled Compose schema
plus the cross-references a schema cannot see.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deployment.topology import ENV_FILE, read_env_file

REPO = Path(__file__).resolve().parent.parent
COMPOSE = REPO / "docker-compose.yaml"
CHECK_JSONSCHEMA = shutil.which("check-jsonschema", path=str(Path(sys.executable).parent)) or shutil.which(
    "check-jsonschema"
)
PRODUCTION_ENV = {
    "NIGHTFEED_WAREHOUSE": "${NIGHTFEED_WAREHOUSE:-bigquery}",
    "NIGHTFEED_BIGQUERY_PROJECT": "${NIGHTFEED_BIGQUERY_PROJECT:-nightfeed-prod}",
    "NIGHTFEED_LAKE": "${NIGHTFEED_LAKE:-gs://nightfeed-lake/prod}",
    "GOOGLE_APPLICATION_CREDENTIALS": "/opt/airflow/secrets/gcp-credentials.json",
}
AIRFLOW_COMPONENTS = {
    "airflow-apiserver": "api-server",
    "airflow-scheduler": "scheduler",
    "airflow-dag-processor": "dag-processor",
    "airflow-triggerer": "triggerer",
    "airflow-worker": "celery worker",
}


def validate(path: Path) -> subprocess.CompletedProcess[str]:
    assert CHECK_JSONSCHEMA, "check-jsonschema is not installed (it is in requirements.txt)"
    return subprocess.run(
        [CHECK_JSONSCHEMA, "--builtin-schema", "vendor.compose-spec", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def test_compose_file_matches_the_compose_spec() -> None:
    result = validate(COMPOSE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_validation_rejects_an_unknown_key(tmp_path: Path, compose: dict[str, Any]) -> None:
    broken = tmp_path / "docker-compose.yaml"
    compose["services"]["airflow-scheduler"]["bogus_key"] = True
    broken.write_text(yaml.safe_dump(compose))
    result = validate(broken)
    assert result.returncode != 0
    assert "bogus_key" in result.stdout + result.stderr


def test_every_depends_on_names_a_service(compose: dict[str, Any]) -> None:
    services = set(compose["services"])
    for name, service in compose["services"].items():
        needs = service.get("depends_on") or {}
        assert set(needs) <= services, f"{name} depends on unknown {set(needs) - services}"
        assert name not in needs


def test_airflow_components_are_all_there(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, command in AIRFLOW_COMPONENTS.items():
        assert services[name]["command"] == command
        assert services[name]["env_file"] == [ENV_FILE.name]
    assert read_env_file(ENV_FILE)["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert {"postgres", "redis", "airflow-init"} <= set(services)
    assert services["airflow-worker"]["deploy"]["replicas"] == "${AIRFLOW_WORKER_REPLICAS:-2}"
    init = services["airflow-init"]["command"][-1]
    for step in ("airflow db migrate", "airflow pools set nightfeed_training 1", "airflow users create"):
        assert step in init


def test_every_service_on_the_image_has_the_production_env(compose: dict[str, Any]) -> None:
    on_image = {
        n: s for n, s in compose["services"].items() if "build" in s or "nightfeed" in s.get("image", "")
    }
    assert set(AIRFLOW_COMPONENTS) | {"airflow-init"} <= set(on_image)
    for name, service in on_image.items():
        env = service["environment"]
        for key, value in PRODUCTION_ENV.items():
            assert env.get(key) == value, f"{name}: {key}={env.get(key)!r}"
        mounts = [str(v) for v in service.get("volumes", [])]
        assert any(m.endswith(":/opt/airflow/secrets/gcp-credentials.json:ro") for m in mounts), name
        assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg2://")


def test_airflow_settings_live_in_the_env_file_only(compose: dict[str, Any]) -> None:
    # The topology test starts the components from airflow.env; a setting repeated here could drift.
    shared = set(read_env_file(ENV_FILE))
    for name, service in compose["services"].items():
        if "env_file" in service:
            assert not shared & set(service.get("environment") or {}), name


def test_dockerfile_builds_from_the_pinned_airflow_with_the_lock() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    assert "ARG AIRFLOW_VERSION=3.3.2" in dockerfile
    assert "FROM apache/airflow:${AIRFLOW_VERSION}-python3.11" in dockerfile
    assert "-r ${NIGHTFEED_HOME}/requirements.txt -c ${NIGHTFEED_HOME}/constraints.txt" in dockerfile
    for folder in ("pipelines/", "sql/", "dags/", "plugins/"):
        assert f"COPY --chown=airflow:0 {folder}" in dockerfile
