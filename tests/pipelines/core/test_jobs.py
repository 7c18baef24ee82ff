"""The job catalog: every job resolves to its function, and every job function is in the catalog."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

from pipelines.core import jobs

JOBS_DIR = Path(__file__).resolve().parents[3] / "pipelines" / "jobs"


@pytest.mark.parametrize("job", jobs.JOBS, ids=lambda j: j.name)
def test_every_job_resolves_to_a_function_of_a_run_context(job: jobs.Job) -> None:
    function = job.function()
    assert function.__name__ == job.name
    assert next(iter(inspect.signature(function).parameters)) == "ctx"
    assert function.__doc__, f"{job.name} has no docstring"


def test_job_names_are_unique_and_summaries_are_set() -> None:
    names = [job.name for job in jobs.JOBS]
    assert len(names) == len(set(names))
    assert all(job.summary for job in jobs.JOBS)


def test_every_job_function_is_in_the_catalog() -> None:
    # A public module-level function of pipelines/jobs/<stage>.py whose first parameter is the run context.
    catalog = {(job.stage, job.name) for job in jobs.JOBS}
    found = set()
    for path in sorted(JOBS_DIR.glob("*.py")):
        if path.name == "__init__.py":
            continue
        for node in ast.parse(path.read_text()).body:
            public = isinstance(node, ast.FunctionDef) and not node.name.startswith("_")
            if public and node.args.args and node.args.args[0].arg == "ctx":
                found.add((path.stem, node.name))
    assert found == catalog


def test_the_night_facts_are_the_jobs_that_record_one() -> None:
    assert [job.name for job in jobs.NIGHT_FACTS] == [
        "build_features",
        "train_system",
        "export_inputs",
        "embed_items",
        "build_index",
        "publish_candidates",
        "publish_digests",
    ]
