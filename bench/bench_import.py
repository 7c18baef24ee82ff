"""Import benchmark: peak memory and rows/s of ``import_files`` on large generated events CSV files.

    .venv/bin/python bench/bench_import.py --rows 10000000 50000000 [--days 60] [--scratch /var/tmp]

For each size it writes an events CSV of that many rows spread evenly over ``--days`` days ending
yesterday (ISO 8601 timestamps with a zone, ~70 bytes a row) plus small items and users files into a
scratch folder, imports them into a fresh DuckDB warehouse in a child process, and prints the file size,
the child's peak memory (``VmHWM`` read from its own ``/proc/self/status`` after the import), rows/s and
the load average before and after. The scratch folder is deleted afterwards. The baseline is the file:
the importer is meant to stay far below its size, whatever the size.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CHUNK_ROWS = 1_000_000
N_USERS = 100_000
N_ITEMS = 20_000


def write_events(path: Path, rows: int, days: int, end: dt.date) -> None:
    """``rows`` events over ``days`` days ending at ``end``, in time order, written chunk by chunk."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pacsv

    rng = np.random.default_rng(7)
    start = np.datetime64(dt.datetime.combine(end - dt.timedelta(days=days - 1), dt.time()), "us")
    span_us = days * 86_400 * 1_000_000
    kinds = pa.array(["impression", "impression", "impression", "click", "upvote"])
    with pacsv.CSVWriter(
        path, _events_schema(), write_options=pacsv.WriteOptions(quoting_style="none")
    ) as out:
        for first in range(0, rows, CHUNK_ROWS):
            n = min(CHUNK_ROWS, rows - first)
            ids = pa.array(np.arange(first, first + n))
            offsets = (np.arange(first, first + n) * (span_us // rows)).astype("timedelta64[us]")
            stamps = pa.array(start + offsets, pa.timestamp("us", tz="UTC"))
            chunk = pa.table(
                {
                    "event_id": pc.binary_join_element_wise("e", ids.cast(pa.string()), ""),
                    "user_id": pc.binary_join_element_wise(
                        "u", pa.array(rng.integers(0, N_USERS, n)).cast(pa.string()), ""
                    ),
                    "item_id": pc.binary_join_element_wise(
                        "p", pa.array(rng.integers(0, N_ITEMS, n)).cast(pa.string()), ""
                    ),
                    "event_type": kinds.take(pa.array(rng.integers(0, len(kinds), n))),
                    "event_ts": pc.strftime(stamps, "%Y-%m-%dT%H:%M:%SZ"),
                    "position": pa.array(rng.integers(0, 30, n)),
                },
                schema=_events_schema(),
            )
            out.write_table(chunk)


def _events_schema():
    import pyarrow as pa

    return pa.schema(
        [
            ("event_id", pa.string()),
            ("user_id", pa.string()),
            ("item_id", pa.string()),
            ("event_type", pa.string()),
            ("event_ts", pa.string()),
            ("position", pa.int64()),
        ]
    )


def write_catalog(folder: Path, end: dt.date, days: int) -> tuple[Path, Path]:
    """Small items and users CSV files matching the events' ids."""
    first = (end - dt.timedelta(days=days + 30)).isoformat()
    items, users = folder / "items.csv", folder / "users.csv"
    with open(items, "w") as fh:
        fh.write(
            "item_id,title,summary,tags,source,author,post_type,content_type,language,url,created_at,deleted\n"
        )
        for i in range(N_ITEMS):
            fh.write(f"p{i},Post {i},About {i},python|go,src{i % 50},a{i % 900},article,text,en,"
                     f"https://posts.example/p{i},{first}T00:00:00Z,false\n")  # fmt: skip
    with open(users, "w") as fh:
        fh.write(
            "user_id,email,signup_ts,language,selected_tags,blocked_tags,blocked_sources,digest_opt_in,"
            "digest_frequency,digest_weekday,timezone\n"
        )
        for u in range(N_USERS):
            fh.write(f"u{u},r{u}@example.com,{first}T00:00:00Z,en,python,,,true,weekly,{u % 7},UTC\n")
    return items, users


def child(events: str, items: str, users: str, data_dir: str) -> None:
    """Run in the measured process: import the files, then print rows, seconds and own VmHWM as JSON."""
    sys.path.insert(0, str(REPO))
    from pipelines.core.warehouse import DuckDBWarehouse
    from pipelines.data.importer import import_files

    started = time.perf_counter()
    with DuckDBWarehouse(Path(data_dir) / "warehouse.duckdb") as warehouse:
        report = import_files(warehouse, events, items, users, scratch_dir=data_dir)
    seconds = time.perf_counter() - started
    status = Path("/proc/self/status").read_text()
    peak_kb = int(next(line for line in status.splitlines() if line.startswith("VmHWM:")).split()[1])
    print(json.dumps({"report": report.to_dict(), "seconds": seconds, "vmhwm_kb": peak_kb}))


def measure(rows: int, days: int, scratch_root: str | None) -> dict:
    """Generate the files for ``rows`` events, import them in a child process, delete the files."""
    scratch = Path(tempfile.mkdtemp(prefix="nightfeed-bench-import-", dir=scratch_root))
    try:
        end = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)
        events = scratch / "events.csv"
        started = time.perf_counter()
        write_events(events, rows, days, end)
        items, users = write_catalog(scratch, end, days)
        generated = time.perf_counter() - started
        load_before = os.getloadavg()
        proc = subprocess.run(
            [sys.executable, __file__, "--child", str(events), str(items), str(users), str(scratch)],
            capture_output=True,
            text=True,
            check=False,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        if proc.returncode != 0:
            raise SystemExit(f"import of {rows:,} rows failed:\n{proc.stderr[-4000:]}")
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        loaded = result["report"]["loaded"]["raw_events"]
        if loaded != rows:
            raise SystemExit(f"loaded {loaded:,} of {rows:,} events: {result['report']}")
        return {
            "rows": rows,
            "days": days,
            "csv_mb": events.stat().st_size / 2**20,
            "generate_s": generated,
            "import_s": result["seconds"],
            "rows_per_s": rows / result["seconds"],
            "peak_mb": result["vmhwm_kb"] / 1024,
            "load_before": load_before,
            "load_after": os.getloadavg(),
        }
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[10_000_000, 50_000_000])
    parser.add_argument("--days", type=int, default=60, help="days the events spread over")
    parser.add_argument("--scratch", default=None, help="folder for the generated files (deleted after)")
    parser.add_argument(
        "--child", nargs=4, metavar=("EVENTS", "ITEMS", "USERS", "DATA_DIR"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    print("rows        days  CSV MB   import s  rows/s     peak MB  peak/CSV  load avg before -> after")
    for rows in args.rows:
        r = measure(rows, args.days, args.scratch)
        sizes = f"{r['rows']:<11,} {r['days']:<5} {r['csv_mb']:<8.0f}"
        speed = f"{r['import_s']:<9.1f} {r['rows_per_s']:<10,.0f}"
        memory = f"{r['peak_mb']:<8.0f} {r['peak_mb'] / r['csv_mb']:<9.2f}"
        load = f"{r['load_before'][0]:.2f} -> {r['load_after'][0]:.2f}"
        print(f"{sizes} {speed} {memory} {load}", flush=True)


if __name__ == "__main__":
    main()
