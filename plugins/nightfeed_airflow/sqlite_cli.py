"""SQLite sessions for the embedded Airflow home, where the scheduler and CLI commands write to one file.

SQLite lets one writer in at a time and pysqlite gives up after 5 s with "database is locked": a
``airflow backfill create`` beside a busy ``make airflow`` scheduler on a loaded machine fails that way.
``bin/nightfeed`` names one of these factories as ``[database] sql_alchemy_session_maker``:
``command_session_maker`` for one-off CLI commands (each transaction begins with ``BEGIN IMMEDIATE``,
so it waits for the write lock up front and its reads and writes cannot be cut apart by another writer),
``server_session_maker`` for the long-running components (the same wait, SQLite's usual deferred
transactions). On another database both are Airflow's default session factory.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import sessionmaker

# How long a writer waits for the lock; a busy scheduler on a loaded machine holds it for seconds.
BUSY_TIMEOUT_MS = 120_000


def session_maker(engine: Engine, *, begin_immediate: bool) -> sessionmaker:
    """Airflow's session factory; on SQLite, writers wait for the lock, and with ``begin_immediate`` every
    transaction begins with ``BEGIN IMMEDIATE``.

    Args:
        engine: Airflow's metadata engine.
        begin_immediate: take the write lock when a transaction begins (for one-off CLI commands).

    Returns:
        The session factory Airflow uses for every session of the process.
    """
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _waiting_without_driver_transactions if begin_immediate else _waiting)
        if begin_immediate:
            event.listen(engine, "begin", _begin_immediate)
    return _airflow_sessionmaker(engine)


command_session_maker = partial(session_maker, begin_immediate=True)
server_session_maker = partial(session_maker, begin_immediate=False)


def _airflow_sessionmaker(engine: Engine) -> sessionmaker:
    # Airflow's own settings for its default factory (airflow.settings.configure_orm).
    return sessionmaker(engine, autocommit=False, autoflush=False, expire_on_commit=False)


def _waiting(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")


def _waiting_without_driver_transactions(dbapi_connection: Any, record: Any) -> None:
    # pysqlite opens its own deferred transactions; let SQLAlchemy's "begin" event open them instead.
    dbapi_connection.isolation_level = None
    _waiting(dbapi_connection, record)


def _begin_immediate(connection: Connection) -> None:
    connection.exec_driver_sql("BEGIN IMMEDIATE")
