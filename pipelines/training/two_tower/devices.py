"""TensorFlow's first device probe, without its false alarm on machines that have no NVIDIA GPU.

TensorFlow's CUDA build calls ``cuInit`` when it first lists devices and, when the machine has no NVIDIA
driver, logs ``failed call to cuInit`` at ERROR level in every process that uses it (neither
``CUDA_VISIBLE_DEVICES`` nor any TensorFlow setting prevents the call). On a machine without an NVIDIA
device, :func:`probe_devices` runs that probe once with stderr captured and writes back everything it
printed except that line; with a GPU present nothing is touched.
"""

from __future__ import annotations

import glob
import os
import sys
import tempfile
from collections.abc import Callable

CUINIT_NOISE = b"failed call to cuInit"


def has_nvidia_device() -> bool:
    """Whether the kernel exposes an NVIDIA GPU (``/dev/nvidia0``, ``/dev/nvidia1``, ...)."""
    return bool(glob.glob("/dev/nvidia[0-9]*"))


def without_stderr_line(call: Callable[[], object], noise: bytes) -> None:
    """Run ``call`` with file descriptor 2 captured, then write back every captured line but those
    containing ``noise`` (C++ libraries write to the descriptor, not to ``sys.stderr``)."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            call()
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            kept = [line for line in captured.read().splitlines(keepends=True) if noise not in line]
            os.write(2, b"".join(kept))


def probe_devices() -> None:
    """List TensorFlow's devices now, without the cuInit false alarm when there is no NVIDIA device."""
    if has_nvidia_device():
        return
    import tensorflow as tf

    without_stderr_line(tf.config.list_physical_devices, CUINIT_NOISE)
