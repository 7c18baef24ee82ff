"""Reliability case 6 (issue 13), command line part: a user's mistake in any command prints one ``error:``
line (and a ``hint:`` line) and exits 2, with no traceback."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.cli import COMMANDS, main
from tests.airflow_support import REPO

_LOG_LINE = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2},\d{3} [A-Z]+ ")
# At least one user error per command, on an empty data folder.
USER_ERRORS: dict[str, list[list[str]]] = {
    "world": [["world", "--scale", "huge", "--end-date", "2026-11-20"], ["world"]],
    "import": [["import"], ["import", "--events", "nope.csv", "--items", "x.csv", "--users", "y.csv"]],
    "features": [
        ["features"],
        ["features", "--start", "2026-11-20", "--end", "2026-11-10"],
        ["features", "--end", "2026-11-20"],
        ["features", "--ds", "2026-11-20"],
        ["features", "--ds", "2026-02-30"],
    ],
    "train": [["train", "--ds", "2026-11-20"], ["train", "--ds", "2026-02-30"]],
    "nightly": [["nightly", "--ds", "2026-11-20"], ["nightly", "--ds", "2026-11-20", "--num-shards", "0"]],
    "digests": [["digests", "--ds", "2026-11-20"]],
    "digest-preview": [["digest-preview", "--ds", "2026-11-20", "--user", "u1", "--out", "x.html"]],
    "report": [["report", "--ds", "yesterday"]],
    "outputs": [["outputs"]],
    "freshness": [["freshness", "--ds", "2026-11-20"], ["freshness", "--ds", "2026-02-30"]],
}
CASES = [(name, args) for name, cases in USER_ERRORS.items() for args in cases]


def test_every_command_has_user_error_cases() -> None:
    assert set(USER_ERRORS) == set(COMMANDS)


def _run(args: list[str]) -> int:
    try:
        return main(args)
    except SystemExit as exc:  # argparse
        return int(exc.code or 0)


@pytest.mark.parametrize(("command", "args"), CASES, ids=[" ".join(a) for _, a in CASES])
def test_case_06_user_errors_print_one_line_and_exit_2_in_every_command(
    command: str,
    args: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("NIGHTFEED_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.chdir(tmp_path)
    assert _run(args) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line and not _LOG_LINE.match(line)]
    assert 1 <= len(err) <= 2, err
    assert err[0].startswith("error: ") and len(err[0]) > len("error: ") + 10, err
    assert all(line.startswith("hint: ") for line in err[1:]), err
    assert "Traceback" not in "\n".join(err)


def test_case_06_a_bad_settings_file_is_a_user_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("NIGHTFEED_DATA_DIR", str(tmp_path / "data"))
    for content in (None, "warehouse: [\n"):
        config = tmp_path / "nightfeed.yaml"
        if content is not None:
            config.write_text(content)
        monkeypatch.setenv("NIGHTFEED_CONFIG", str(config))
        assert _run(["outputs", "--ds", "2026-11-20"]) == 2
        assert capsys.readouterr().err.startswith(f"error: NIGHTFEED_CONFIG='{config}'")


def test_case_06_a_real_process_prints_no_traceback(tmp_path: Path) -> None:
    (tmp_path / "events.csv").write_bytes(b"event_id,user_id\n\xff\n")
    files = ["--events", "events.csv", "--items", "events.csv", "--users", "events.csv"]
    proc = subprocess.run(
        [sys.executable, "-m", "pipelines", "import", *files],
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), "NIGHTFEED_DATA_DIR": str(tmp_path / "data")},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        "error: events.csv: columns do not match raw_events: missing ['item_id', 'event_type', 'event_ts', "
        "'position'], unexpected []"
    ]
