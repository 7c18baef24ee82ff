"""nightfeed_airflow.runtime: which ds a run processes, and how job failures map onto Airflow's retries.

Runs in a fresh interpreter with the tests' Airflow environment, so importing Airflow here cannot pick up
a developer's AIRFLOW_HOME.
"""

from __future__ import annotations

import pytest

from tests.airflow_support import airflow_env, script_result

pytestmark = pytest.mark.airflow

_SCRIPT = r"""
import datetime as dt, json
from airflow.sdk.exceptions import AirflowFailException
from nightfeed_airflow.runtime import call_job, resolve_ds
from pipelines.core import jobs

utc = dt.timezone.utc
cases = {
    "run_date_wins": {"params": {"run_date": "2026-11-02"},
                      "logical_date": dt.datetime(2026, 11, 21, tzinfo=utc)},
    "no_run_date": {"params": {"run_date": None}, "logical_date": dt.datetime(2026, 11, 21, tzinfo=utc)},
    "logical_date_in_utc": {"params": {}, "logical_date": dt.datetime(2026, 11, 21, 23, 30,
                            tzinfo=dt.timezone(dt.timedelta(hours=-5)))},
    "nothing": {"params": {}, "logical_date": None},
    "bad_run_date": {"params": {"run_date": "21/11/2026"}},
}
out = {}
for name, context in cases.items():
    try:
        out[name] = resolve_ds(context)
    except AirflowFailException as exc:
        out[name] = f"AirflowFailException: {exc}"
def call(name, job, params):
    try:
        out[name] = call_job(job, "2026-11-20", params)
    except Exception as exc:
        out[name] = f"{type(exc).__name__}: {exc}"

call("bad_setting", jobs.PLAN_SHARDS, {"num_shards": 0})
call("no_raw_events", jobs.BUILD_FEATURES, {})
call("missing_features", jobs.EXPORT_INPUTS, {})
# The warehouse path cannot be opened (here a directory stands where the file should be): not a domain
# error, so it propagates unchanged and Airflow retries it once the operator has fixed the storage.
import os, tempfile
os.environ["NIGHTFEED_DUCKDB_PATH"] = tempfile.mkdtemp()
call("unopenable_warehouse", jobs.EXPORT_INPUTS, {})
print("RESULT " + json.dumps(out))
"""


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    base = tmp_path_factory.mktemp("runtime")
    return script_result(_SCRIPT, airflow_env(base / "airflow_home", base / "data"))


def test_run_date_param_wins_over_the_logical_date(results: dict[str, str]) -> None:
    assert results["run_date_wins"] == "2026-11-02"


def test_an_empty_run_date_leaves_the_logical_date(results: dict[str, str]) -> None:
    assert results["no_run_date"] == "2026-11-21"


def test_logical_date_is_read_in_utc(results: dict[str, str]) -> None:
    # 2026-11-21 23:30 at UTC-5 is 2026-11-22 04:30 UTC.
    assert results["logical_date_in_utc"] == "2026-11-22"


def test_a_run_without_any_date_fails_without_retries(results: dict[str, str]) -> None:
    assert results["nothing"].startswith("AirflowFailException: this run has no logical date")
    assert "run_date" in results["nothing"]


def test_a_malformed_run_date_names_the_param(results: dict[str, str]) -> None:
    assert results["bad_run_date"].startswith("AirflowFailException: ")
    assert "param run_date" in results["bad_run_date"]


def test_permanent_failures_become_airflow_fail_exceptions(results: dict[str, str]) -> None:
    assert results["bad_setting"].startswith("AirflowFailException: plan_shards for ds=2026-11-20")
    assert "num_shards" in results["bad_setting"]
    assert results["no_raw_events"].startswith("AirflowFailException: build_features for ds=2026-11-20")


def test_missing_features_fail_without_retries(results: dict[str, str]) -> None:
    # The features of the day were never built: a retry cannot build them, the message says how.
    assert results["missing_features"].startswith("AirflowFailException: export_inputs for ds=2026-11-20")
    assert "python -m pipelines features --ds 2026-11-20" in results["missing_features"]


def test_other_errors_stay_retryable(results: dict[str, str]) -> None:
    assert results["unopenable_warehouse"].startswith("IOException"), results["unopenable_warehouse"]
