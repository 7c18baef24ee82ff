"""Start bqemulator without network access.

bqemulator 1.4.0 insists on ``INSTALL spatial`` at startup, which downloads the DuckDB spatial
extension from extensions.duckdb.org. Nightfeed's SQL uses no GEOGRAPHY, so the extension is loaded
when it is already installed and skipped otherwise. The avro extension (another download) is switched
off through ``BQEMU_ENABLE_FORMAT_EXTENSIONS``.

Run with the emulator's own interpreter, with the arguments of ``bqemulator``::

    .emulators/bq/bin/python tests/emulators/bqemu_offline.py start --rest-port 9050 --grpc-port 9060
"""

import logging
import os

os.environ.setdefault("BQEMU_ENABLE_FORMAT_EXTENSIONS", "false")

from bqemulator.cli import main
from bqemulator.storage.engine import DuckDBEngine

if not hasattr(DuckDBEngine, "_load_spatial"):
    raise SystemExit("bqemulator changed: DuckDBEngine._load_spatial is gone; update this launcher")


def _load_spatial_if_installed(self: DuckDBEngine) -> None:
    try:
        self.connection.execute("LOAD spatial")
    except Exception as exc:
        logging.getLogger("bqemu_offline").warning("spatial extension not loaded, GEOGRAPHY off: %s", exc)


DuckDBEngine._load_spatial = _load_spatial_if_installed

if __name__ == "__main__":
    main()
