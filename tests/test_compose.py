"""docker-compose.yaml: valid against the Compose specification, internally consistent, production env set,
no secret with a default.

There is no Docker engine in CI, so the file is checked with ``check-jsonschema``'s bundled Compose schema
plus the cross-references a schema cannot see, and its ``${...}`` variables are interpolated here the way
Compose does it.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deployment.topology import ENV_FILE, read_env_file
from tests.test_readme import readme_blocks

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
# Environment variables a deployment must set itself (Compose refuses to start without them), with the
# Airflow setting each one reaches and how it is written there.
REQUIRED_SECRETS = {
    "AIRFLOW_JWT_SECRET": ("AIRFLOW__API_AUTH__JWT_SECRET", "{}"),
    "AIRFLOW_API_SECRET_KEY": ("AIRFLOW__API__SECRET_KEY", "{}"),
    "AIRFLOW_FERNET_KEY": ("AIRFLOW__CORE__FERNET_KEY", "{}"),
    "_AIRFLOW_WWW_USER_PASSWORD": ("_AIRFLOW_WWW_USER_PASSWORD", "{}"),
    "NIGHTFEED_UNSUBSCRIBE_SECRET": ("NIGHTFEED_DIGEST__UNSUBSCRIBE_SECRET", "{}"),
    "POSTGRES_PASSWORD": (
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
        "postgresql+psycopg2://airflow:{}@postgres/airflow",
    ),
    "REDIS_PASSWORD": ("AIRFLOW__CELERY__BROKER_URL", "redis://:{}@redis:6379/0"),
    "FLOWER_BASIC_AUTH": ("AIRFLOW__CELERY__FLOWER_BASIC_AUTH", "{}"),
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


_VARIABLE = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")


class MissingVariable(ValueError):
    """What ``docker compose`` reports for a ``${VAR:?message}`` whose variable is unset or empty."""


def interpolate(text: str, env: dict[str, str]) -> str:
    """``text`` with Compose's variable syntax replaced: ``$$``, ``${V}``, ``${V:-d}``, ``${V-d}``,
    ``${V:?m}`` and ``${V?m}`` (the last two raise :class:`MissingVariable` naming ``V``)."""

    def value(match: re.Match[str]) -> str:
        name, operator, arg = match.groups()
        if name is None:
            return "$"
        current = env.get(name)
        missing = current is None or (operator in (":-", ":?") and current == "")
        if operator in (":?", "?") and missing:
            raise MissingVariable(f"required variable {name} is missing a value: {arg}")
        if operator in (":-", "-") and missing:
            return arg
        return current or ""

    return _VARIABLE.sub(value, text)


def test_compose_refuses_to_start_without_each_secret() -> None:
    text = COMPOSE.read_text()
    secrets = {name: f"secret-for-{name.lower().strip('_')}" for name in REQUIRED_SECRETS}
    rendered = yaml.safe_load(interpolate(text, secrets))
    init = rendered["services"]["airflow-init"]["environment"]
    for name, (key, written) in REQUIRED_SECRETS.items():
        assert init[key] == written.format(secrets[name]), key
        for empty in ({k: v for k, v in secrets.items() if k != name}, {**secrets, name: ""}):
            with pytest.raises(MissingVariable, match=name):
                interpolate(text, empty)
    worker = rendered["services"]["airflow-worker"]["environment"]
    assert worker["AIRFLOW__API_AUTH__JWT_SECRET"] == secrets["AIRFLOW_JWT_SECRET"]
    assert worker["NIGHTFEED_DIGEST__UNSUBSCRIBE_SECRET"] == secrets["NIGHTFEED_UNSUBSCRIBE_SECRET"]
    # The database and the broker are started with the passwords the components use.
    services = rendered["services"]
    assert services["postgres"]["environment"]["POSTGRES_PASSWORD"] == secrets["POSTGRES_PASSWORD"]
    assert services["redis"]["environment"]["REDIS_PASSWORD"] == secrets["REDIS_PASSWORD"]
    assert "--requirepass" in " ".join(services["redis"]["command"])
    # Flower reads its login from the common Airflow environment, and its health check logs in with it.
    flower = services["flower"]
    assert flower["environment"]["AIRFLOW__CELERY__FLOWER_BASIC_AUTH"] == secrets["FLOWER_BASIC_AUTH"]
    assert '--user "${AIRFLOW__CELERY__FLOWER_BASIC_AUTH}"' in " ".join(flower["healthcheck"]["test"])


def test_the_readme_env_block_sets_every_secret_and_compose_starts_with_it(tmp_path: Path) -> None:
    block = next(lines for _, lines in readme_blocks() if lines and lines[0] == "cat >> .env <<EOF")
    subprocess.run(["bash", "-c", "\n".join(block)], cwd=tmp_path, check=True)
    written = dict(line.split("=", 1) for line in (tmp_path / ".env").read_text().splitlines())
    assert set(written) == set(REQUIRED_SECRETS)
    assert all(len(value) >= 16 for value in written.values()), written
    rendered = yaml.safe_load(interpolate(COMPOSE.read_text(), written))
    init = rendered["services"]["airflow-init"]["environment"]
    for name, (key, how) in REQUIRED_SECRETS.items():
        assert init[key] == how.format(written[name]), key


def test_no_secret_has_a_default(compose: dict[str, Any]) -> None:
    text = COMPOSE.read_text()
    for name in REQUIRED_SECRETS:
        # Every use of a secret is required (``:?``), wherever it stands (a URL too).
        uses = re.findall(r"(?<!\$)\$\{" + name + r"(:?[-?+])?([^}]*)\}", text)
        assert uses and all(op == ":?" and message.strip() for op, message in uses), f"{name}: {uses}"
    for name, service in compose["services"].items():
        env = service.get("environment") or {}
        for key, written in REQUIRED_SECRETS.values():
            if key in env and written == "{}":
                assert re.fullmatch(r"\$\{[A-Z_]+:\?[^}]+\}", str(env[key])), f"{name}: {key}={env[key]!r}"
    for default in ("change-me", "PASSWORD:-", "FERNET_KEY:-", "redis://:@"):
        assert default not in text
