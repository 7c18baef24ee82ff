"""Running real Airflow from tests: a throwaway AIRFLOW_HOME, the CLI, and ``airflow standalone``.

Every Airflow process gets the environment from :func:`airflow_env`, which is also what ``make run``
needs (with a persistent AIRFLOW_HOME instead of a temporary one):

    AIRFLOW_HOME=<home>  AIRFLOW__CORE__DAGS_FOLDER=<repo>/dags  AIRFLOW__CORE__PLUGINS_FOLDER=<repo>/plugins
    AIRFLOW__CORE__LOAD_EXAMPLES=False  PYTHONPATH=<repo>  TF_USE_LEGACY_KERAS=1  NIGHTFEED_DATA_DIR=<data>

Inherited ``AIRFLOW__*`` and ``NIGHTFEED_*`` variables are dropped so a developer's shell cannot leak a
BigQuery warehouse or another DAG folder into the tests.

``airflow standalone`` does not stop on SIGTERM (its scheduler and executor workers linger), so it is
started in its own session and the whole process group is killed with SIGKILL.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.quick_selection import QUICK_SELECTION

REPO = Path(__file__).resolve().parent.parent
DAGS_FOLDER = REPO / "dags"
PLUGINS_FOLDER = REPO / "plugins"
AIRFLOW = str(Path(sys.executable).parent / "airflow")
TRAINING_POOL = ("nightfeed_training", "1", "Nightfeed model training: one at a time")
_READY_MARKER = "nightfeed-airflow-home-ready"
# SQLite lets one writer in at a time; with a scheduler, an API server and a CLI command writing at once
# on a busy machine, the default 5 s wait for the lock is not enough.
SQLITE_CONNECT_ARGS = {"timeout": 60}
# The quick selection with every model trained on the 8 days before its night, no age limit, and a ranker
# on impressions or none.
SMALL_SELECTION = {
    **QUICK_SELECTION,
    "NIGHTFEED_TWO_TOWER__TRAIN_DAYS": "8",
    "NIGHTFEED_RANKER__TRAIN_DAYS": "6",
    "NIGHTFEED_RANKER__EVAL_DAYS": "2",
    "NIGHTFEED_SELECTION__MAX_ITEM_AGE_CHOICES": "[null]",
    "NIGHTFEED_SELECTION__RANKERS": '["none", "impressions"]',
}


def airflow_env(home: Path, data_dir: Path | None = None, **extra: str) -> dict[str, str]:
    """Environment for an Airflow process with home ``home`` and the lake and warehouse in ``data_dir``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW__", "NIGHTFEED_", "AIRFLOW_"))}
    pythonpath = [str(REPO), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    env.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__DAGS_FOLDER=str(DAGS_FOLDER),
        AIRFLOW__CORE__PLUGINS_FOLDER=str(PLUGINS_FOLDER),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION="True",
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS="tests.airflow_support.SQLITE_CONNECT_ARGS",
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS_ASYNC="tests.airflow_support.SQLITE_CONNECT_ARGS",
        PYTHONPATH=os.pathsep.join(pythonpath),
        # airflow standalone starts its components as `airflow ...` from PATH.
        PATH=os.pathsep.join([str(Path(AIRFLOW).parent), os.environ.get("PATH", "")]),
        TF_USE_LEGACY_KERAS="1",
    )
    if data_dir is not None:
        env["NIGHTFEED_DATA_DIR"] = str(data_dir)
    env.update(extra)
    return env


def run_airflow(
    args: list[str], env: dict[str, str], timeout: float = 180, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run ``airflow <args>``; on failure (with ``check``) raise with the tail of its output."""
    proc = subprocess.run(
        [AIRFLOW, *args], env=env, capture_output=True, text=True, timeout=timeout, cwd=REPO, check=False
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"airflow {' '.join(args)} exited {proc.returncode}\n"
            f"--- stdout (tail) ---\n{proc.stdout[-6000:]}\n--- stderr (tail) ---\n{proc.stderr[-6000:]}"
        )
    return proc


def prepare_home(home: Path) -> Path:
    """Migrate a fresh SQLite metadata DB in ``home`` and create the training pool (once per folder)."""
    if (home / _READY_MARKER).exists():
        return home
    home.mkdir(parents=True, exist_ok=True)
    env = airflow_env(home)
    run_airflow(["db", "migrate"], env)
    run_airflow(["pools", "set", *TRAINING_POOL], env)
    (home / _READY_MARKER).write_text("migrated\n")
    return home


def dags_test(
    env: dict[str, str],
    dag_id: str,
    logical_date: str,
    conf: dict[str, Any] | None = None,
    timeout: float = 600,
) -> subprocess.CompletedProcess[str]:
    """``airflow dags test`` one run (in-process executor); returns the finished process, not checked."""
    args = ["dags", "test", dag_id, logical_date]
    if conf is not None:
        args += ["-c", json.dumps(conf)]
    return run_airflow(args, env, timeout=timeout, check=False)


def run_pipelines(args: list[str], env: dict[str, str], timeout: float = 300) -> None:
    """``python -m pipelines <args>`` with ``env``; raises with the tail of its stderr when it fails."""
    cmd = [sys.executable, "-m", "pipelines", *args]
    proc = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"pipelines {' '.join(args)}:\n{proc.stderr[-4000:]}"


def script_result(script: str, env: dict[str, str], timeout: float = 180) -> Any:
    """Run ``script`` in a fresh interpreter with ``env``; returns the JSON it printed after ``RESULT ``."""
    proc = subprocess.run(
        [sys.executable, "-c", script], env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout
    )
    line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
    assert line, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(line[len("RESULT ") :])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Standalone:
    """A running ``airflow standalone``: its base URL, admin credentials, environment and log file."""

    url: str
    username: str
    password: str
    env: dict[str, str]
    log_file: Path
    pgid: int

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        token: str | None = None,
        cookies: dict[str, str] | None = None,
    ) -> tuple[int, str, dict[str, str]]:
        """HTTP request to the API server; returns status, body text and headers (no redirects followed)."""
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"{self.url}{path}", data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        if cookies:
            req.add_header("Cookie", "; ".join(f"{k}={v}" for k, v in cookies.items()))
        opener = urllib.request.build_opener(_NoRedirect())
        try:
            with opener.open(req, timeout=30) as resp:
                return resp.status, resp.read().decode(), dict(resp.headers)
        except urllib.error.HTTPError as err:
            return err.code, err.read().decode(errors="replace"), dict(err.headers)

    def token(self) -> str:
        status, body, _ = self.request(
            "POST", "/auth/token", {"username": self.username, "password": self.password}
        )
        assert status in (200, 201), f"POST /auth/token -> {status}: {body}"
        return json.loads(body)["access_token"]

    def log_tail(self, chars: int = 8000) -> str:
        return self.log_file.read_text(errors="replace")[-chars:] if self.log_file.exists() else ""


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


@contextlib.contextmanager
def standalone(home: Path, data_dir: Path, startup_timeout: float = 150) -> Iterator[Standalone]:
    """Start ``airflow standalone`` on free 127.0.0.1 ports with a password-protected admin user.

    Yields once ``/api/v2/monitor/health`` reports every component healthy; always SIGKILLs the whole
    process group on exit.
    """
    prepare_home(home)
    port, worker_logs, trigger_logs = free_port(), free_port(), free_port()
    password = secrets.token_urlsafe(12)
    passwords_file = home / "simple_auth_manager_passwords.json"
    passwords_file.write_text(json.dumps({"admin": password}))
    env = airflow_env(
        home,
        data_dir,
        AIRFLOW__API__HOST="127.0.0.1",
        AIRFLOW__API__PORT=str(port),
        AIRFLOW__API__WORKERS="1",
        AIRFLOW__CORE__EXECUTION_API_SERVER_URL=f"http://127.0.0.1:{port}/execution/",
        AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT=str(worker_logs),
        AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT=str(trigger_logs),
        AIRFLOW__CORE__PARALLELISM="4",
        AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS="admin:admin",
        AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS="False",
        AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE=str(passwords_file),
        AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC="2",
    )
    log_file = home / "standalone.log"
    with open(log_file, "w") as log:
        proc = subprocess.Popen(
            [AIRFLOW, "standalone"],
            env=env,
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    pgid = proc.pid  # start_new_session makes the child its own group leader
    server = Standalone(f"http://127.0.0.1:{port}", "admin", password, env, log_file, pgid)
    try:
        _wait_healthy(server, proc, startup_timeout)
        yield server
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
        proc.wait(timeout=30)


def _wait_healthy(server: Standalone, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"airflow standalone exited {proc.returncode}:\n{server.log_tail()}")
        if "Exception in thread" in server.log_tail(200_000):
            raise AssertionError(f"an airflow standalone component did not start:\n{server.log_tail()}")
        with contextlib.suppress(OSError):
            status, body, _ = server.request("GET", "/api/v2/monitor/health")
            last = f"{status} {body}"
            if status == 200:
                health = json.loads(body)
                if all(
                    (health.get(part) or {}).get("status") == "healthy"
                    for part in ("metadatabase", "scheduler", "dag_processor")
                ):
                    return
        time.sleep(1)
    raise AssertionError(
        f"airflow standalone not healthy after {timeout}s (last: {last}):\n{server.log_tail()}"
    )


def wait_for(predicate, timeout: float, interval: float = 2.0, what: str = "condition") -> Any:
    """Poll ``predicate`` until it returns something truthy; return that value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)
