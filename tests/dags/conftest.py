from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path

import pytest

from tests.airflow_support import prepare_home
from tests.dags.dag_inspection import DAG_FILES, PARAM_CASES, describe


@pytest.fixture(scope="session")
def airflow_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One migrated SQLite Airflow home per test process (about 5 s to create)."""
    return prepare_home(tmp_path_factory.getbasetemp() / "airflow_home")


@pytest.fixture(scope="session")
def described(airflow_home: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    """Each DAG file parsed in a fresh interpreter (about 3 s each), with its param cases validated.

    Computed once per run even under pytest-xdist: the workers of one run share the parent of their base
    temp folders and a run id, and the first worker to take the lock writes the result for the others.
    """

    def compute() -> dict[str, dict]:
        return {
            path.stem: describe(
                path, airflow_home, {name: conf for name, (conf, _) in PARAM_CASES.get(path.stem, {}).items()}
            )
            for path in DAG_FILES
        }

    run_id = os.environ.get("PYTEST_XDIST_TESTRUNUID")
    if not run_id:
        return compute()
    shared = tmp_path_factory.getbasetemp().parent / f"nightfeed-described-{run_id}.json"
    with open(f"{shared}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not shared.exists():
            shared.write_text(json.dumps(compute()))
        return json.loads(shared.read_text())
