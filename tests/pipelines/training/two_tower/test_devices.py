"""TensorFlow's cuInit false alarm: printed at ERROR level without the package's device probe, gone with it,
while every other line written to stderr during the probe still reaches stderr."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from pipelines.training.two_tower.devices import CUINIT_NOISE, has_nvidia_device
from tests.airflow_support import REPO

pytestmark = pytest.mark.skipif(has_nvidia_device(), reason="the false alarm exists only without a GPU")


def stderr_of(code: str) -> str:
    env = {**os.environ, "TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stderr


def test_tensorflow_alone_reports_the_missing_gpu_as_an_error() -> None:
    assert CUINIT_NOISE.decode() in stderr_of("import tensorflow as tf; tf.constant(1.0)")


def test_the_two_tower_package_probes_devices_quietly_and_keeps_other_errors() -> None:
    stderr = stderr_of(
        "import os\n"
        "from pipelines.training.two_tower.devices import CUINIT_NOISE, without_stderr_line\n"
        "import tensorflow as tf\n"
        "tf.constant(1.0)\n"
        "def probe():\n"
        "    os.write(2, b'E real error from a library\\n')\n"
        "    os.write(2, b'E xla/cuda_platform.cc:51] ' + CUINIT_NOISE + b': INTERNAL: (303)\\n')\n"
        "without_stderr_line(probe, CUINIT_NOISE)\n"
    )
    assert CUINIT_NOISE.decode() not in stderr
    assert "E real error from a library\n" in stderr
