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
        # BEGIN IMMEDIATE takes the write lock up front: two gateways reading the same open work order
        # and both counting an occurrence must not lose one (SQLite has no SELECT ... FOR UPDATE).
        return _sqlite(url, ["PRAGMA journal_mode=WAL", "PRAGMA foreign_keys=ON"], "BEGIN IMMEDIATE")
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
    return _sqlite(url, ["PRAGMA query_only=ON"], "BEGIN")


def _sqlite(url: str, pragmas: list[str], begin: str) -> Engine:
    """An engine on a SQLite file whose transactions start with ``begin``; ``pragmas`` on each connection."""
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30}, hide_parameters=True)

    @event.listens_for(engine, "connect")
    def _set_up(connection: Any, record: Any) -> None:
        cursor = connection.cursor()
        for pragma in pragmas:
            cursor.execute(pragma)
        cursor.close()
        # We issue BEGIN ourselves (below); pysqlite's own would come only at the first write, after the
        # reads a transaction decides on, and a reader would see each statement's own snapshot.
        connection.isolation_level = None

    @event.listens_for(engine, "begin")
    def _begin(connection: Any) -> None:
        connection.exec_driver_sql(begin)

    return engine


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
