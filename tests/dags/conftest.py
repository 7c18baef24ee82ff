from __future__ import annotations

from pathlib import Path

import pytest

from tests.airflow_support import prepare_home


@pytest.fixture(scope="session")
def airflow_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One migrated SQLite Airflow home for the whole session (about 5 s to create)."""
    return prepare_home(tmp_path_factory.getbasetemp() / "airflow_home")


@pytest.fixture(scope="session")
def described(airflow_home: Path) -> dict[str, dict]:
    """Each DAG file parsed once in a fresh interpreter (about 3 s each), with its param cases validated."""
    from tests.dags.dag_inspection import DAG_FILES, PARAM_CASES, describe

    return {
        path.stem: describe(
            path, airflow_home, {name: conf for name, (conf, _) in PARAM_CASES.get(path.stem, {}).items()}
        )
        for path in DAG_FILES
    }
