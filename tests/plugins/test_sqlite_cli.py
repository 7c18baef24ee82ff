"""The embedded Airflow home's SQLite sessions: while another connection holds the write lock longer than
pysqlite's 5 s, Airflow's default session fails with "database is locked" and ours wait their turn."""

from __future__ import annotations

import importlib.util
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import sessionmaker

from tests.airflow_support import PLUGINS_FOLDER

_spec = importlib.util.spec_from_file_location(
    "sqlite_cli", PLUGINS_FOLDER / "nightfeed_airflow" / "sqlite_cli.py"
)
sqlite_cli = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(sqlite_cli)

HOLD_S = 6.5  # longer than pysqlite's default 5 s wait


def airflow_default(engine):
    return sessionmaker(engine, autocommit=False, autoflush=False, expire_on_commit=False)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "airflow.db"
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA journal_mode=WAL")  # as Airflow sets it
        conn.execute("CREATE TABLE runs (id INTEGER PRIMARY KEY, logical_date TEXT UNIQUE)")
    return path


def test_sessions_wait_for_a_writer_that_holds_the_lock_past_the_default_timeout(db: Path) -> None:
    holding = threading.Event()

    def scheduler() -> None:
        conn = sqlite3.connect(db, isolation_level=None)
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO runs (logical_date) VALUES ('scheduled')")
        holding.set()
        time.sleep(HOLD_S)
        conn.execute("COMMIT")
        conn.close()

    def backfill(factory: Callable, day: str, outcome: dict[str, str]) -> None:
        session = factory(create_engine(f"sqlite:///{db}"))()
        try:
            taken = session.execute(text("SELECT count(*) FROM runs")).scalar_one()
            session.execute(text("INSERT INTO runs (logical_date) VALUES (:d)"), {"d": f"{day}-{taken}"})
            session.commit()
            outcome[day] = "committed"
        except OperationalError as exc:
            outcome[day] = str(exc.orig)
        finally:
            session.close()

    outcome: dict[str, str] = {}
    writer = threading.Thread(target=scheduler)
    writer.start()
    holding.wait(10)
    clients = [
        threading.Thread(target=backfill, args=(airflow_default, "default", outcome)),
        threading.Thread(target=backfill, args=(sqlite_cli.command_session_maker, "command", outcome)),
        threading.Thread(target=backfill, args=(sqlite_cli.server_session_maker, "server", outcome)),
    ]
    for client in clients:
        client.start()
    for thread in (writer, *clients):
        thread.join(60)

    assert outcome == {"default": "database is locked", "command": "committed", "server": "committed"}
    with sqlite3.connect(db) as conn:
        rows = {row[0] for row in conn.execute("SELECT logical_date FROM runs")}
    # The command read inside its transaction, so it saw the scheduler's committed row.
    committed_before = [int(row.split("-")[1]) for row in rows if row.startswith("command-")]
    assert "scheduled" in rows and committed_before[0] >= 1
