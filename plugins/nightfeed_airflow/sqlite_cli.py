"""SQLite sessions for the embedded Airflow home, where the scheduler and CLI commands write to one file.

SQLite lets one writer in at a time and pysqlite gives up after 5 s with "database is locked": a
``airflow backfill create`` beside a busy ``make airflow`` scheduler on a loaded machine fails that way.
``bin/nightfeed`` names one of these factories as ``[database] sql_alchemy_session_maker``:
:func:`command_session_maker` for one-off CLI commands (each transaction begins with ``BEGIN IMMEDIATE``,
so it waits for the write lock up front and its reads and writes cannot be cut apart by another writer),
:func:`server_session_maker` for the long-running components (the same wait, SQLite's usual deferred
transactions). On another database both are Airflow's default session factory.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import sessionmaker

# How long a writer waits for the lock; a busy scheduler on a loaded machine holds it for seconds.
BUSY_TIMEOUT_MS = 120_000


def command_session_maker(engine: Engine) -> sessionmaker:
    """Airflow's session factory for a CLI command: on SQLite, transactions begin with ``BEGIN IMMEDIATE``.

    Args:
        engine: Airflow's metadata engine.

    Returns:
        The session factory Airflow uses for every session of the process.
    """
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _waiting_without_driver_transactions)
        event.listen(engine, "begin", _begin_immediate)
    return _airflow_sessionmaker(engine)


def server_session_maker(engine: Engine) -> sessionmaker:
    """Airflow's session factory for a long-running component: on SQLite, writers wait for the lock.

    Args:
        engine: Airflow's metadata engine.

    Returns:
        The session factory Airflow uses for every session of the process.
    """
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _waiting)
    return _airflow_sessionmaker(engine)


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
