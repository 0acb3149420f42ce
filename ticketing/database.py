"""The work-order database: engine set-up for SQLite and PostgreSQL, and alembic migrations on start."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, event, inspect
from sqlalchemy.engine import Engine

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
# The schema before migrations existed (tables made with create_all): adopted as revision 0001.
FIRST_REVISION = "0001"


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30}, hide_parameters=True)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(connection: Any, record: Any) -> None:
            cursor = connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()
            # We issue BEGIN ourselves (below); pysqlite's own would come only at the first write,
            # after the reads a transaction decides on.
            connection.isolation_level = None

        @event.listens_for(engine, "begin")
        def _begin_immediate(connection: Any) -> None:
            # Take the write lock up front: two gateways reading the same open work order and
            # both counting an occurrence must not lose one (SQLite has no SELECT ... FOR UPDATE).
            connection.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    # Parameters stay out of error messages (and so out of logs): they hold password hashes and secrets.
    return create_engine(url, pool_pre_ping=True, hide_parameters=True)


def make_reader(url: str, engine: Engine) -> Engine:
    """The engine for reading only. On SQLite its own connections, which take no lock: a WAL reader sees a
    snapshot and never waits for the writer, nor makes it wait. Reads through the writer's connections took
    the write lock (BEGIN IMMEDIATE), so the webhook deliverer's look at the outbox every second, the clock
    and every dashboard request made a new alarm's work order wait (bench.latency). Elsewhere the same engine:
    PostgreSQL readers do not block writers."""
    if not url.startswith("sqlite:///"):
        return engine
    reader = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30}, hide_parameters=True)

    @event.listens_for(reader, "connect")
    def _read_only(connection: Any, record: Any) -> None:
        cursor = connection.cursor()
        cursor.execute("PRAGMA query_only=ON")
        cursor.close()
        connection.isolation_level = None

    @event.listens_for(reader, "begin")
    def _begin_deferred(connection: Any) -> None:
        # One snapshot for the whole session (pysqlite would otherwise read each statement on its own).
        connection.exec_driver_sql("BEGIN")

    return reader


def migrate(engine: Engine) -> str:
    """Bring the schema to the newest revision; returns it. Safe to run from several processes at once."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            # One migrator at a time; the others wait here and then find nothing to do.
            connection.exec_driver_sql("SELECT pg_advisory_xact_lock(4242)")
        config.attributes["connection"] = connection
        current = MigrationContext.configure(connection).get_current_revision()
        if current is None and inspect(connection).has_table("work_orders"):
            command.stamp(config, FIRST_REVISION)
        command.upgrade(config, "head")
        return MigrationContext.configure(connection).get_current_revision() or ""
