"""What the benchmarks measure the same way: a step in a fresh child process with its own peak memory
(``VmHWM`` of /proc/self/status: a child's ``ru_maxrss`` starts from its parent's), its CPU time, the
load average around it, and the machine's sgemm rate, the bound of exact retrieval."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent


def _status_bytes(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


def peak_memory() -> int:
    """This process's own peak resident memory (``VmHWM``), in bytes."""
    return _status_bytes("VmHWM")


def resident_memory() -> int:
    """This process's resident memory now (``VmRSS``), in bytes."""
    return _status_bytes("VmRSS")


def cpu_seconds() -> float:
    """User and system CPU seconds of this process, all threads."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def child_result(result: dict[str, Any]) -> None:
    """Print ``result`` with this process's peak memory and CPU time as the last stdout line."""
    result = {**result, "peak_memory": peak_memory(), "cpu_seconds": round(cpu_seconds(), 2)}
    print(json.dumps(result, default=str), flush=True)


def run_child(command: list[str], env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run ``command`` (a Python script that ends with :func:`child_result`) in a fresh interpreter.

    Returns:
        Its result with ``wall_seconds`` (process start-up and imports included) and ``loadavg``, the
        1-minute load average before and after.

    Raises:
        SystemExit: the child failed.
    """
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, *command],
        stdout=subprocess.PIPE,
        text=True,
        check=False,
        env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})},
    )
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed with exit code {done.returncode}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["wall_seconds"] = round(time.perf_counter() - started, 2)
    result["loadavg"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    return result


def sgemm_gflops(dim: int, seconds: float = 2.0) -> float:
    """GFLOP/s of float32 matrix products shaped like exact retrieval (2,048 queries x ``dim`` against
    65,536 items), over about ``seconds``: the rate a blocked exact search cannot beat."""
    rng = np.random.default_rng(0)
    queries = rng.standard_normal((2048, dim), np.float32)
    items = rng.standard_normal((65536, dim), np.float32)
    queries @ items.T  # warm-up
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        queries @ items.T
        done += 1
    return 2.0 * queries.shape[0] * items.shape[0] * dim * done / (time.perf_counter() - started) / 1e9


def gb(n: float) -> str:
    return f"{n / 2**30:.2f} GB"


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
