"""A bad param is rejected by Airflow's JSON-schema validation, before the run exists or writes anything."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.airflow_support import airflow_env, dags_test
from tests.dags.dag_inspection import PARAM_CASES

pytestmark = pytest.mark.airflow

CASES = [(stem, name, valid) for stem, cases in PARAM_CASES.items() for name, (_, valid) in cases.items()]


@pytest.mark.parametrize(("stem", "name", "valid"), CASES, ids=[f"{s}-{n}" for s, n, _ in CASES])
def test_param_validation(described: dict[str, dict], stem: str, name: str, valid: bool) -> None:
    result = described[stem]["dags"][stem]["validation"][name]
    if valid:
        assert result == "ok"
    else:
        assert result.startswith("ParamValidationError"), result


def test_bad_param_stops_the_run_before_anything_is_written(airflow_home: Path, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    proc = dags_test(
        airflow_env(airflow_home, data_dir), "nightfeed_nightly", "2026-11-20", {"num_shards": 0}
    )
    output = proc.stderr + proc.stdout
    assert proc.returncode != 0
    assert "ParamValidationError" in output and "num_shards" in output
    assert not data_dir.exists()
