"""Every DAG file: parses without errors, imports nothing heavy, and follows the repo's DAG conventions."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from tests.airflow_support import airflow_env, run_airflow
from tests.dags.dag_inspection import DAG_FILES, HEAVY_MODULES, dag_call_keywords, describe

pytestmark = pytest.mark.airflow

EXPECTED_DAGS = {"nightfeed_features", "nightfeed_training", "nightfeed_nightly", "nightfeed_freshness"}


def test_dag_folder_holds_the_expected_dags() -> None:
    assert {p.stem for p in DAG_FILES} == EXPECTED_DAGS


def test_airflow_reports_no_import_errors(airflow_home: Path) -> None:
    proc = run_airflow(["dags", "list-import-errors", "--local", "-o", "json"], airflow_env(airflow_home))
    listing = next(line for line in reversed(proc.stdout.splitlines()) if line.startswith("["))
    assert json.loads(listing) == []


@pytest.mark.parametrize("path", DAG_FILES, ids=lambda p: p.stem)
def test_dag_file_parses_to_one_dag_named_after_the_file(path: Path, described: dict[str, dict]) -> None:
    info = described[path.stem]
    assert info["import_errors"] == {}
    assert list(info["dags"]) == [path.stem]


@pytest.mark.parametrize("path", DAG_FILES, ids=lambda p: p.stem)
def test_dag_file_imports_nothing_heavy_at_parse_time(path: Path, described: dict[str, dict]) -> None:
    assert described[path.stem]["heavy_modules"] == []


def test_heavy_import_check_catches_a_top_level_pandas_import(airflow_home: Path, tmp_path: Path) -> None:
    # The check above must be able to fail: a DAG file that imports pandas at module level is caught.
    canary = tmp_path / "canary_heavy.py"
    canary.write_text(
        "import datetime as dt\nimport pandas\nfrom airflow.sdk import dag, task\n\n"
        "@dag(dag_id='canary_heavy', schedule=None, start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC))\n"
        "def canary_heavy():\n    @task\n    def noop():\n        return None\n    noop()\n\ncanary_heavy()\n"
    )
    assert "pandas" in describe(canary, airflow_home)["heavy_modules"]
    assert "pandas" in HEAVY_MODULES


@pytest.mark.parametrize("path", DAG_FILES, ids=lambda p: p.stem)
def test_dag_follows_conventions(path: Path, described: dict[str, dict]) -> None:
    info = described[path.stem]["dags"][path.stem]
    module_doc = ast.get_docstring(ast.parse(path.read_text()), clean=False)
    assert module_doc and info["doc_md"] == module_doc, "doc_md must be the module docstring"
    assert "nightfeed" in info["tags"] and len(info["tags"]) >= 2
    assert info["start_tz"] == "UTC"
    for task_id, task in info["tasks"].items():
        assert task["retries"] >= 2, task_id
        assert task["retry_exponential_backoff"] > 1, task_id
        assert task["execution_timeout_s"], f"{task_id} has no execution_timeout"


@pytest.mark.parametrize("path", DAG_FILES, ids=lambda p: p.stem)
def test_dag_declares_schedule_settings_explicitly(path: Path) -> None:
    keywords = dag_call_keywords(path)
    for name in (
        "dag_id",
        "schedule",
        "start_date",
        "catchup",
        "max_active_runs",
        "doc_md",
        "tags",
        "params",
    ):
        assert name in keywords, f"@dag(...) in {path.name} does not set {name}"
    assert isinstance(keywords["dag_id"], ast.Constant) and keywords["dag_id"].value == path.stem
    assert isinstance(keywords["doc_md"], ast.Name) and keywords["doc_md"].id == "__doc__"
    # A static start date: a literal datetime(...) with constant fields and an explicit UTC tzinfo.
    start = keywords["start_date"]
    assert isinstance(start, ast.Call), "start_date must be a datetime(...) literal"
    assert all(isinstance(arg, ast.Constant) for arg in start.args), "start_date must not be computed"
    tzinfo = {kw.arg: kw.value for kw in start.keywords}.get("tzinfo")
    assert tzinfo is not None and ast.unparse(tzinfo) in {
        "dt.UTC",
        "datetime.UTC",
        "timezone.utc",
        "dt.timezone.utc",
    }
