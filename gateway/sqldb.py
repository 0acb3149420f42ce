"""An SQLAlchemy engine for the gateway's own tables (identities, audit log) on SQLite or PostgreSQL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import MetaData, create_engine, event
from sqlalchemy.engine import Engine


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30}, hide_parameters=True)

        @event.listens_for(engine, "connect")
        def _sqlite(connection: Any, record: Any) -> None:
            connection.execute("PRAGMA journal_mode=WAL")
            connection.isolation_level = None  # BEGIN is ours (below)

        @event.listens_for(engine, "begin")
        def _begin_immediate(connection: Any) -> None:
            # Writers one at a time across processes: the audit log's chain has no forks.
            connection.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    # Parameters stay out of error messages (and so out of logs): they hold password hashes and secrets.
    return create_engine(url, pool_pre_ping=True, hide_parameters=True)


def create_tables(metadata: MetaData, engine: Engine) -> None:
    """``metadata.create_all``, one gateway at a time: gateways of a cluster starting together on one
    PostgreSQL would otherwise race to create the same table and one of them would fail."""
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.exec_driver_sql("SELECT pg_advisory_xact_lock(4244)")
        metadata.create_all(connection)
