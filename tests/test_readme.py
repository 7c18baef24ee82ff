"""The README's commands, as written, from a fresh shell: ``make run`` on a tiny world, then every line of
each block marked ``<!-- runnable -->``; every CLI command is documented; CI runs ``make test``.

The fresh shell has no venv on PATH, no PYTHONPATH and no Airflow variables; only the Airflow home, the
data folder (both in a temporary folder) and a small model selection are set. The runnable blocks run in
a folder whose ``bin/`` is the repo's, so files they write stay out of the repo. About 6 minutes on
2 cores, most of it ``make run``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from pipelines.cli import COMMANDS
from pipelines.training.two_tower.devices import CUINIT_NOISE, has_nvidia_device
from tests.airflow_support import REPO, SMALL_SELECTION

README = REPO / "README.md"
RUNNABLE = "<!-- runnable -->"
DS = "2026-11-22"  # the README's example date
FENCE = "```"


def readme_blocks() -> list[tuple[str, list[str]]]:
    """Each fenced block of the README with the HTML comment on the line before it ("" without one)."""
    blocks: list[tuple[str, list[str]]] = []
    lines = README.read_text().splitlines()
    i = 0
    while i < len(lines):
        if lines[i].startswith(FENCE):
            marker = lines[i - 1].strip() if i and lines[i - 1].startswith("<!--") else ""
            end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith(FENCE))
            blocks.append((marker, lines[i + 1 : end]))
            i = end
        i += 1
    return blocks


def runnable_commands() -> list[str]:
    return [line for marker, lines in readme_blocks() if marker == RUNNABLE for line in lines if line.strip()]


def fresh_shell(root: Path) -> dict[str, str]:
    """A login-like environment: system PATH only, the repo's Airflow home and data moved under ``root``."""
    return {
        "HOME": str(root),
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "AIRFLOW_HOME": str(root / "airflow_home"),
        "NIGHTFEED_DATA_DIR": str(root / "data"),
        **SMALL_SELECTION,
    }


def installed_stamp() -> str:
    """The Makefile's install stamp: the suite already runs in the installed venv (``make test`` needs it)."""
    checksum = subprocess.run(
        "cat requirements.txt constraints.txt | cksum", shell=True, cwd=REPO, capture_output=True, text=True
    ).stdout.split()[0]
    return f".venv/.installed-{checksum}"


def run(args: list[str] | str, env: dict[str, str], cwd: Path, timeout: float) -> tuple[str, str]:
    proc = subprocess.run(
        args,
        shell=isinstance(args, str),
        executable="/bin/bash" if isinstance(args, str) else None,
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert proc.returncode == 0, (
        f"{args} exited {proc.returncode}\n--- stdout ---\n{proc.stdout[-5000:]}\n"
        f"--- stderr ---\n{proc.stderr[-5000:]}"
    )
    return proc.stdout, proc.stderr


def test_every_cli_command_is_documented() -> None:
    documented = {
        line.split()[1] for _, lines in readme_blocks() for line in lines if line.startswith("bin/nightfeed ")
    }
    assert set(COMMANDS) <= documented, f"not in the README: {sorted(set(COMMANDS) - documented)}"


def test_runnable_blocks_exist_and_ci_runs_make_test() -> None:
    assert any(line.startswith("bin/nightfeed airflow ") for line in runnable_commands())
    assert "make test" in [line.strip() for line in (REPO / ".ci" / "run").read_text().splitlines()]


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("readme")
    env = fresh_shell(root)
    stdout, stderr = run(
        ["make", "-o", installed_stamp(), "run", f"RUN_DATE={DS}", "SCALE=tiny"], env, REPO, timeout=1500
    )
    outputs = json.loads(stdout.split(f"== Outputs for {DS}\n", 1)[1])
    return {"root": root, "env": env, "output": stdout + stderr, "outputs": outputs}


@pytest.mark.airflow
@pytest.mark.slow
def test_make_run_shows_each_task_and_where_the_report_is(made: dict[str, Any]) -> None:
    for task in ("build_features", "train_system", "export_inputs", "publish_candidates", "write_report"):
        assert re.search(rf"^\s+\d+s\s+{task}\s+started$", made["output"], re.M), task
        assert re.search(rf"^\s+\d+s\s+{task}\s+done$", made["output"], re.M), task
    report = made["outputs"]["report"]
    assert report["published"] and re.search(r"/run=[^/]+$", report["files_in"])
    assert made["outputs"]["report_html"] == f"{report['files_in']}/report.html"
    assert "<html" in Path(made["outputs"]["report_html"]).read_text().lower()


@pytest.mark.airflow
@pytest.mark.slow
@pytest.mark.skipif(has_nvidia_device(), reason="the cuInit false alarm exists only without a GPU")
def test_make_run_logs_no_cuinit_error(made: dict[str, Any]) -> None:
    logs = sorted((made["root"] / "airflow_home").glob("nightfeed_*.log"))
    assert len(logs) == 3
    for text in (made["output"], *(log.read_text() for log in logs)):
        assert CUINIT_NOISE.decode() not in text


@pytest.mark.airflow
@pytest.mark.slow
def test_runnable_readme_blocks_work_as_written(made: dict[str, Any]) -> None:
    cwd = made["root"] / "shell"
    cwd.mkdir()
    os.symlink(REPO / "bin", cwd / "bin")
    for command in runnable_commands():
        run(command, made["env"], cwd, timeout=600)
    assert (cwd / "digest.html").stat().st_size > 0
