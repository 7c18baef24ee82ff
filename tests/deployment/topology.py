"""The production topology as processes: docker-compose.yaml's services without a container engine.

Postgres 15 and Redis come from Debian packages (``.ci/run`` installs them), Airflow 3.3 runs with the
CeleryExecutor as api-server, scheduler, dag-processor, triggerer and Celery workers. Every Airflow
process gets the settings of ``airflow.env`` (the file docker-compose.yaml reads) plus the addresses of
the services started here; each worker gets its own hostname and log-server port, as a container would.

Every process runs in its own session; on exit every group is killed at once, then the Postgres cluster
and its folder are removed.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from tests.airflow_support import AIRFLOW, REPO, TRAINING_POOL, airflow_env, free_port, run_airflow

ENV_FILE = REPO / "airflow.env"
PG_BIN = Path("/usr/lib/postgresql/15/bin")
REDIS_SERVER = "/usr/bin/redis-server"
WORKER_HOSTNAME = "NIGHTFEED_WORKER_HOSTNAME"


def read_env_file(path: Path) -> dict[str, str]:
    """``KEY=VALUE`` lines of an env file as Compose reads them (comments and blank lines skipped)."""
    pairs = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            pairs[key.strip()] = value.strip()
    return pairs


def worker_hostname() -> str:
    """Airflow's ``[core] hostname_callable`` here: the worker's own name, as its container would have."""
    return os.environ.get(WORKER_HOSTNAME) or "localhost"


@dataclass
class Topology:
    """The running topology: the API's base URL, the environment of its processes and their handles."""

    url: str
    env: dict[str, str]
    logs: Path
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def api(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """A REST call to the API server (every user is an admin here); returns status and decoded JSON."""
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"{self.url}{path}", data=data, method=method)
        req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                text = resp.read().decode()
                return resp.status, json.loads(text) if text else None
        except urllib.error.HTTPError as err:
            return err.code, err.read().decode(errors="replace")

    def airflow(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        return run_airflow(list(args), self.env, timeout=timeout)

    def freeze(self, name: str) -> list[psutil.Process]:
        """Stop (SIGSTOP) a component and every process under it, the task processes it forked included."""
        root = psutil.Process(self.processes[name].pid)
        tree = [root, *root.children(recursive=True)]
        for proc in tree:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.send_signal(signal.SIGSTOP)
        return tree

    def kill(self, tree: list[psutil.Process]) -> None:
        """SIGKILL a frozen process tree: the machine it ran on is gone, nothing shuts down cleanly."""
        for proc in tree:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.kill()
        for proc in tree:
            with contextlib.suppress(psutil.NoSuchProcess, psutil.TimeoutExpired):
                proc.wait(timeout=10)

    def start_worker(self, name: str, wait: bool = True) -> None:
        """Start (or restart, as compose's ``restart: always`` would) the Celery worker ``name``."""
        env = {
            **self.env,
            WORKER_HOSTNAME: name,
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
        }
        cmd = [AIRFLOW, "celery", "worker", "--celery-hostname", f"{name}@%h"]
        log = self.logs / f"{name}.log"
        if log.exists():
            log.rename(self.logs / f"{name}.{int(time.time())}.log")
        self.processes[name] = _start(cmd, log, env)
        if wait:
            self.wait_worker_ready(name)

    def wait_worker_ready(self, name: str) -> None:
        _wait(lambda: " ready." in self.log_tail(name, 100_000), 120, name, lambda: _tails(self))

    def log_tail(self, name: str, chars: int = 6000) -> str:
        path = self.logs / f"{name}.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""


def _run(args: list[str], user: str | None = None, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    cmd = ["runuser", "-u", user, "--", *args] if user else args
    return subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=120, **kwargs)


def _start(cmd: list[str], log: Path, env: dict[str, str] | None = None, user: str | None = None) -> Any:
    with open(log, "w") as out:
        return subprocess.Popen(
            ["runuser", "-u", user, "--", *cmd] if user else cmd,
            env=env,
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _stop(*procs: subprocess.Popen[bytes]) -> None:
    """SIGKILL each process group (throwaway services: nothing to shut down cleanly) and reap them."""
    for proc in procs:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    for proc in procs:
        proc.wait(timeout=30)


@contextlib.contextmanager
def postgres() -> Iterator[str]:
    """A private Postgres 15 cluster on a free loopback port; yields the SQLAlchemy URL of its database."""
    assert (PG_BIN / "postgres").exists(), "needs Debian's postgresql-15 (.ci/run installs it)"
    user = "postgres" if os.geteuid() == 0 else None  # Postgres refuses to run as root
    base = Path(tempfile.mkdtemp(prefix="nightfeed-pg-"))
    if user:
        shutil.chown(base, user)
    port = free_port()
    try:
        _run([str(PG_BIN / "initdb"), "-D", str(base / "data"), "-U", "airflow", "-A", "trust"], user)
        proc = _start(
            [
                str(PG_BIN / "postgres"),
                "-D",
                str(base / "data"),
                "-p",
                str(port),
                "-k",
                str(base),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "fsync=off",
                "-c",
                "max_connections=200",
            ],
            base / "postgres.log",
            user=user,
        )
        try:
            _wait(lambda: _pg_ready(port), 60, "postgres", lambda: (base / "postgres.log").read_text())
            _run([str(PG_BIN / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "airflow", "airflow"])
            yield f"postgresql+psycopg2://airflow@127.0.0.1:{port}/airflow"
        finally:
            _stop(proc)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _pg_ready(port: int) -> bool:
    probe = [str(PG_BIN / "pg_isready"), "-h", "127.0.0.1", "-p", str(port)]
    return subprocess.run(probe, capture_output=True, check=False).returncode == 0


@contextlib.contextmanager
def redis(logs: Path) -> Iterator[str]:
    """A Redis server on a free loopback port, nothing persisted; yields the broker URL."""
    assert Path(REDIS_SERVER).exists(), "needs Debian's redis-server (.ci/run installs it)"
    port = free_port()
    cmd = [REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    proc = _start(cmd, logs / "redis.log")
    try:
        _wait(lambda: "Ready to accept connections" in (logs / "redis.log").read_text(), 30, "redis")
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        _stop(proc)


def _wait(predicate: Any, timeout: float, what: str, details: Any = lambda: "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not ready after {timeout}s:\n{details()[-4000:]}")
        time.sleep(0.5)


@contextlib.contextmanager
def celery_topology(home: Path, data_dir: Path, workers: int = 2, **settings: str) -> Iterator[Topology]:
    """Postgres, Redis and Airflow's components with ``workers`` Celery workers, configured from airflow.env.

    Args:
        home: the AIRFLOW_HOME of every component (logs go to ``home/processes``).
        data_dir: Nightfeed's data folder (DuckDB warehouse and local lake).
        workers: how many Celery workers to start, named ``worker-1`` … with their own log-server ports.
        settings: further environment (``NIGHTFEED_*`` settings, timing knobs a test shortens).

    Yields:
        The topology once the API reports every component healthy and every worker is ready.
    """
    logs = home / "processes"
    logs.mkdir(parents=True, exist_ok=True)
    with postgres() as database, redis(logs) as broker:
        port = free_port()
        addresses = {
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": database,
            "AIRFLOW__CELERY__BROKER_URL": broker,
            "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + database,
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(port),
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__API_AUTH__JWT_SECRET": os.urandom(32).hex(),
            "AIRFLOW__API__SECRET_KEY": os.urandom(32).hex(),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            "AIRFLOW__CORE__HOSTNAME_CALLABLE": "tests.deployment.topology.worker_hostname",
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
        }
        env = airflow_env(home, data_dir, **{**read_env_file(ENV_FILE), **addresses, **settings})
        # The SQLite lock timeout of the embedded tests means nothing to Postgres' driver.
        env.pop("AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS")
        env.pop("AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS_ASYNC")
        run_airflow(["db", "migrate"], env, timeout=300)
        run_airflow(["pools", "set", *TRAINING_POOL], env)
        topology = Topology(f"http://127.0.0.1:{port}", env, logs)
        commands = {
            "api-server": ["api-server"],
            "scheduler": ["scheduler"],
            "dag-processor": ["dag-processor"],
            "triggerer": ["triggerer"],
        }
        try:
            for name, args in commands.items():
                topology.processes[name] = _start([AIRFLOW, *args], logs / f"{name}.log", env)
            for n in range(1, workers + 1):
                topology.start_worker(f"worker-{n}", wait=False)
            _wait(lambda: _healthy(topology), 180, "airflow", lambda: _tails(topology))
            for n in range(1, workers + 1):
                topology.wait_worker_ready(f"worker-{n}")
            yield topology
        finally:
            _stop(*topology.processes.values())


def _healthy(topology: Topology) -> bool:
    for name, proc in topology.processes.items():
        if proc.poll() is not None:
            raise AssertionError(f"{name} exited {proc.returncode}:\n{topology.log_tail(name)}")
    with contextlib.suppress(OSError):
        status, health = topology.api("GET", "/api/v2/monitor/health")
        if status == 200:
            parts = ("metadatabase", "scheduler", "dag_processor", "triggerer")
            return all((health.get(part) or {}).get("status") == "healthy" for part in parts)
    return False


def _tails(topology: Topology | None = None) -> str:
    if topology is None:
        return ""
    return "\n".join(f"--- {name} ---\n{topology.log_tail(name, 1500)}" for name in topology.processes)
