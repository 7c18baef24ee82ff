"""Parse DAG files the way Airflow does, in a fresh interpreter, and describe what came out as JSON.

A fresh interpreter per file is what makes the "nothing heavy at parse time" check honest: the test
process itself may well have pandas or TensorFlow loaded already.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.airflow_support import DAGS_FOLDER, REPO, airflow_env

DAG_FILES = sorted(p for p in DAGS_FOLDER.glob("*.py") if not p.name.startswith("_"))
HEAVY_MODULES = (
    "tensorflow",
    "tf_keras",
    "tensorflow_recommenders",
    "lightgbm",
    "scann",
    "pandas",
    "pyarrow",
    "duckdb",
    "pipelines",
)
# The only parts of the library a DAG file may load at parse time: the job catalog and the run params,
# which import nothing but the standard library.
CATALOG_MODULES = ("pipelines", "pipelines.core", "pipelines.core.jobs", "pipelines.core.params")
_MARKER = "NIGHTFEED-DESCRIBE "

_DESCRIBE = r"""
import json, sys
from airflow.dag_processing.dagbag import DagBag
from airflow.serialization.encoders import encode_timetable

path, heavy, confs = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])

def callbacks(value):
    return [type(c).__name__ for c in (value if isinstance(value, list) else [value] if value else [])]

bag = DagBag(dag_folder=path)
out = {"import_errors": {str(k): str(v) for k, v in bag.import_errors.items()}, "dags": {}}
for dag_id, dag in bag.dags.items():
    tasks = {}
    for t in dag.tasks:
        tasks[t.task_id] = {
            "downstream": sorted(t.downstream_task_ids),
            "mapped": bool(getattr(t, "is_mapped", False)),
            "retries": t.retries,
            "retry_exponential_backoff": t.retry_exponential_backoff,
            "execution_timeout_s": t.execution_timeout.total_seconds() if t.execution_timeout else None,
            "pool": t.pool,
            "trigger_rule": str(t.trigger_rule.value if hasattr(t.trigger_rule, "value") else t.trigger_rule),
            "outlets": [getattr(a, "uri", str(a)) for a in t.outlets],
            "trigger": {
                "dag_id": t.trigger_dag_id,
                "logical_date": t.logical_date,
                "reset_dag_run": t.reset_dag_run,
            } if hasattr(t, "trigger_dag_id") else None,
            "on_failure_callback": callbacks(t.on_failure_callback),
        }
    validation = {}
    for name, conf in confs.items():
        import copy
        params = copy.deepcopy(dag.params)
        try:
            for key, value in conf.items():
                params[key] = value
            params.validate()
            validation[name] = "ok"
        except Exception as exc:
            validation[name] = f"{type(exc).__name__}: {exc}"
    out["dags"][dag_id] = {
        "fileloc": dag.fileloc,
        "tags": sorted(dag.tags),
        "doc_md": dag.doc_md,
        "start_date": dag.start_date.isoformat() if dag.start_date else None,
        "start_tz": str(dag.start_date.tzinfo) if dag.start_date else None,
        "catchup": dag.catchup,
        "max_active_runs": dag.max_active_runs,
        "timetable": type(dag.timetable).__name__,
        "timetable_summary": getattr(dag.timetable, "summary", None),
        "on_failure_callback": callbacks(dag.on_failure_callback),
        "timetable_config": encode_timetable(dag.timetable)["__var"],
        "tasks": tasks,
        "params": {
            k: {**dag.params.get_param(k).schema, "description": dag.params.get_param(k).description}
            for k in dag.params
        },
        "param_defaults": {k: dag.params[k] for k in dag.params},
        "validation": validation,
    }
catalog = set(json.loads(sys.argv[4]))
loaded = {m for m in sys.modules if m.split(".")[0] in heavy and m not in catalog}
out["heavy_modules"] = sorted({m if m.startswith("pipelines") else m.split(".")[0] for m in loaded})
print("NIGHTFEED-DESCRIBE " + json.dumps(out, default=str))
"""


# Run confs checked against each DAG's params: name -> (conf, valid?).
PARAM_CASES: dict[str, dict[str, tuple[dict[str, Any], bool]]] = {
    "nightfeed_nightly": {
        "defaults": ({}, True),
        "all_set": (
            {
                "run_date": "2026-11-20",
                "num_shards": 256,
                "top_k": 1,
                "dry_run_users": 50,
                "skip_digests": True,
            },
            True,
        ),
        "top_k_1000": ({"top_k": 1000}, True),
        "num_shards_0": ({"num_shards": 0}, False),
        "num_shards_257": ({"num_shards": 257}, False),
        "top_k_0": ({"top_k": 0}, False),
        "top_k_1001": ({"top_k": 1001}, False),
        "top_k_text": ({"top_k": "ten"}, False),
        "dry_run_users_0": ({"dry_run_users": 0}, False),
        "skip_digests_text": ({"skip_digests": "yes"}, False),
        "run_date_not_iso": ({"run_date": "20/11/2026"}, False),
        "run_date_not_a_day": ({"run_date": "2026-02-30"}, False),
    },
    "nightfeed_training": {
        "force": ({"force_retrain": True, "run_date": "2026-11-21"}, True),
        "force_text": ({"force_retrain": "yes"}, False),
    },
    "nightfeed_features": {
        "run_date": ({"run_date": "2026-11-21"}, True),
        "run_date_number": ({"run_date": 20261121}, False),
    },
}


def describe(path: Path, home: Path, confs: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """Parse one DAG file in a new interpreter; optionally validate named run confs against its params."""
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            _DESCRIBE,
            str(path),
            json.dumps(HEAVY_MODULES),
            json.dumps(confs or {}),
            json.dumps(CATALOG_MODULES),
        ],
        env=airflow_env(home),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith(_MARKER)]
    assert proc.returncode == 0 and lines, (
        f"parsing {path} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    )
    return json.loads(lines[-1][len(_MARKER) :])


def dag_call_keywords(path: Path) -> dict[str, ast.expr]:
    """Keyword arguments of the ``@dag(...)`` decorator in ``path``, as AST nodes (what the file says)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef):
            for deco in node.decorator_list:
                if isinstance(deco, ast.Call) and getattr(deco.func, "id", None) == "dag":
                    return {kw.arg: kw.value for kw in deco.keywords if kw.arg}
    raise AssertionError(f"{path} has no @dag(...) decorated function")
