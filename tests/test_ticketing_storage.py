"""Work-order storage: alembic migrations, SQLite and a real PostgreSQL, concurrent gateways."""

from __future__ import annotations

import multiprocessing
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.exc import OperationalError

from gateway.core import Alarm, Asset, Severity, Site
from ticketing.config import EngineerConfig, Location, TicketingConfig
from ticketing.database import MIGRATIONS, make_engine, migrate
from ticketing.models import Base
from ticketing.service import TicketingService
from tests.servers import PostgreSQL
from tests.conftest import chain_parts

NOW = datetime(2026, 11, 25, 10, 0, tzinfo=timezone.utc).timestamp()
SITE = Site("north", "North plant", 53.55, 9.99)
ASSETS = {"pump-01": Asset("pump-01", "pump", "Etanorm", "S1", SITE),
          "pump-race": Asset("pump-race", "pump", "Etanorm", "S9", SITE)}


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgreSQL]:
    server = PostgreSQL().start()
    yield server
    server.stop()


def _schema_differences(url: str) -> list:
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            return compare_metadata(MigrationContext.configure(connection), Base.metadata)
    finally:
        engine.dispose()


def test_migrations_build_exactly_the_schema_the_models_describe(tmp_path: Path, postgres: PostgreSQL) -> None:
    for url in (f"sqlite:///{tmp_path / 'wo.db'}", postgres.url):
        engine = make_engine(url)
        revision = migrate(engine)
        assert migrate(engine) == revision  # a second start changes nothing
        engine.dispose()
        assert _schema_differences(url) == [], url


def test_a_database_from_before_migrations_is_adopted(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = create_engine(url)
    with engine.begin() as connection:
        # The first schema as create_all made it, before alembic_version existed.
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        config.attributes["connection"] = connection
        command.upgrade(config, "0001")
        connection.exec_driver_sql("DROP TABLE alembic_version")
    engine.dispose()
    service = TicketingService(TicketingConfig(database_url=url), ASSETS, [], clock=lambda: NOW, **chain_parts(tmp_path))
    assert service.schema_revision == migrate(service.engine)
    assert "alembic_version" in inspect(service.engine).get_table_names()
    service.close()


def test_work_orders_on_postgresql(postgres: PostgreSQL, tmp_path: Path) -> None:
    service = TicketingService(TicketingConfig(database_url=postgres.url, code_prefix="PG"), ASSETS, [],
                               clock=lambda: NOW, **chain_parts(tmp_path))
    code = service.handle_alarm(Alarm("pump-01", NOW, "OHE", Severity.HIGH, "hot"))
    assert service.handle_alarm(Alarm("pump-01", NOW + 1, "OHE", Severity.HIGH, "hot")) == code
    order = service.get_work_order(code)
    assert order["occurrences"] == 2 and order["context"]["asset"]["serial"] == "S1"
    assert service.verify_chain(code)["valid"] is True
    service.close()


def _raise_at_once(url: str, keys: Path, barrier: "multiprocessing.synchronize.Barrier",
                   results: "multiprocessing.Queue") -> None:
    try:
        # Gateways of one plant share the keyring file and the audit log.
        service = TicketingService(TicketingConfig(database_url=url, code_prefix="RACE"), ASSETS, [], clock=lambda: NOW,
                                   **chain_parts(keys))
        barrier.wait(30)
        results.put(service.handle_alarm(Alarm("pump-race", NOW, "VIB", Severity.HIGH, "shaking")))
        service.close()
    except Exception as error:  # the test fails with it, instead of waiting for a result that never comes
        results.put(f"worker failed: {error!r}")


def _crash_right_after_the_commit(url: str, audit_url: str, keys: Path) -> None:
    """A gateway killed the instant its first work order's transaction has committed."""
    import os

    from sqlalchemy import event

    service = _service_with_audit_log(url, audit_url, keys)
    event.listen(service.sessions, "after_commit", lambda session: os._exit(9))
    service.handle_alarm(Alarm("pump-01", NOW, "OHE", Severity.HIGH, "hot"))


def _service_with_audit_log(url: str, audit_url: str, keys: Path) -> TicketingService:
    from gateway.audit import AuditLog
    from gateway.keyring import Keyring

    keyring = Keyring.load(keys / "gateway.key")
    return TicketingService(TicketingConfig(database_url=url, code_prefix="CRASH"), ASSETS, [], clock=lambda: NOW,
                            signer=keyring, anchors=AuditLog(audit_url, keyring))


@pytest.mark.parametrize("backend", ["sqlite", "postgresql", "sqlite, audit log apart",
                                     "sqlite, audit log apart, then moved into the work orders' database"])
def test_a_crash_right_after_a_commit_leaves_no_chain_unanchored(
    backend: str, tmp_path: Path, postgres: PostgreSQL
) -> None:
    """Where the audit log shares the work orders' database, a chain's anchor commits with its events: a kill
    between the commit and what follows it (found by a WAL-replay restore that ended there) must not leave an
    order that `pmgw verify` can never call complete, nor one without the alarm that opened it. Where the
    log is apart (``auth.database_url``), the head noted with the events is anchored when the gateway is back."""
    from gateway.backup import verify_chains

    url = postgres.url if backend == "postgresql" else f"sqlite:///{tmp_path / 'one.db'}"
    audit_url = f"sqlite:///{tmp_path / 'audit.db'}" if "apart" in backend else url
    if backend == "postgresql":
        with create_engine(url).begin() as connection:  # the module's server: start from an empty database
            connection.execute(text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
    crashed = multiprocessing.get_context("spawn").Process(target=_crash_right_after_the_commit,
                                                          args=(url, audit_url, tmp_path))
    crashed.start()
    crashed.join(60)
    assert crashed.exitcode == 9
    if "moved" in backend:
        audit_url = url
    _service_with_audit_log(url, audit_url, tmp_path).close()  # the gateway back: what it noted is anchored
    counts, problems = verify_chains(url, audit_url, tmp_path / "gateway.key", None)
    assert problems == [] and counts["work_orders"] == counts["chains_verified"] == 1, (counts, problems)
    engine = create_engine(url)
    with engine.connect() as connection:  # the alarm that opened it is journalled with it, and so is its event
        assert connection.execute(text("SELECT outcome, work_order_code FROM alarms")).all() == [
            ("work_order", connection.execute(text("SELECT code FROM work_orders")).scalar())]
    engine.dispose()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_two_gateways_raising_one_dedup_key_at_once_make_one_work_order(
    backend: str, tmp_path: Path, postgres: PostgreSQL
) -> None:
    url = postgres.url if backend == "postgresql" else f"sqlite:///{tmp_path / 'shared.db'}"
    context = multiprocessing.get_context("spawn")
    processes = 4
    barrier, results = context.Barrier(processes), context.Queue()
    chain_parts(tmp_path)  # the shared keyring, made before the gateways start
    workers = [context.Process(target=_raise_at_once, args=(url, tmp_path, barrier, results))
               for _ in range(processes)]
    for worker in workers:
        worker.start()
    codes = [results.get(timeout=60) for _ in workers]
    assert not [code for code in codes if str(code).startswith("worker failed")], codes
    for worker in workers:
        worker.join(30)
        assert worker.exitcode == 0
    assert len(set(codes)) == 1
    service = TicketingService(TicketingConfig(database_url=url, code_prefix="RACE"), ASSETS, [], clock=lambda: NOW,
                               **chain_parts(tmp_path))
    orders = service.list_work_orders(device_id="pump-race")
    assert len(orders) == 1 and orders[0]["occurrences"] == processes
    service.close()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_day_plans_read_appointment_windows_and_deadlines_from_either_database(
    backend: str, tmp_path: Path, postgres: PostgreSQL
) -> None:
    # The day plan reads open orders column by column (a JSON path for the window), not as whole orders.
    url = f"sqlite:///{tmp_path / 'wo.db'}" if backend == "sqlite" else postgres.url
    solo = EngineerConfig(id=f"solo-{backend}", name="Solo", skills=["mechanical"],
                          home=Location(latitude=53.55, longitude=9.99))
    # Assets of this test alone: the PostgreSQL database is shared by the module's tests.
    assets = {f"plan-{n}": Asset(f"plan-{n}", "pump", "Etanorm", f"P{n}", SITE) for n in (1, 2)}
    service = TicketingService(TicketingConfig(database_url=url, code_prefix=f"AP{backend[0].upper()}"), assets,
                               [solo], clock=lambda: NOW, **chain_parts(tmp_path))
    start = NOW + 4 * 3600
    booked = service.create_manual("plan-1", "NOI", Severity.LOW, "inspect the coupling", "planner",
                                   appointment=(start, start + 3600))
    service.accept(booked, solo.id)
    urgent = service.handle_alarm(Alarm("plan-2", NOW, "VIB", Severity.HIGH, "shaking"))
    plan = service.day_plan(solo.id)
    stops = {stop["work_order"]: stop for stop in plan["stops"]}
    assert set(stops) == {booked, urgent}
    assert stops[booked]["arrive_at"] == pytest.approx(start, abs=1), "there as the window opens, not before"
    assert stops[booked]["accepted"] is True
    assert stops[urgent]["deadline"] == service.get_work_order(urgent)["sla"]["clocks"]["on_site"]["deadline"]
    assert stops[urgent]["arrive_at"] < start, "the urgent job goes first, before the window"
    service.close()


def test_reads_on_sqlite_neither_wait_for_a_writer_nor_hold_one_up(tmp_path: Path) -> None:
    """Reads (the API, the deliverer's look at the outbox, the clock) go through a query-only engine:
    a WAL reader sees the last commit while a write transaction is open, and a writer never waits for it."""
    service = TicketingService(TicketingConfig(database_url=f"sqlite:///{tmp_path / 'wo.db'}"), ASSETS, [],
                               clock=lambda: NOW, **chain_parts(tmp_path))
    code = service.handle_alarm(Alarm("pump-01", NOW, "OHE", Severity.HIGH, "hot"))
    with service.sessions.begin() as writing:
        writing.execute(text("UPDATE work_orders SET title = 'changing' WHERE code = :code"), {"code": code})
        began = time.monotonic()
        assert service.get_work_order(code)["title"] != "changing", "the last commit, not the open transaction"
        assert service.webhooks.due() == []
        assert [o["code"] for o in service.list_work_orders()] == [code]
        assert time.monotonic() - began < 5, "no read waited for the writer (the busy timeout is 30 s)"
    with service.reads() as reading:
        assert reading.execute(text("SELECT count(*) FROM work_orders")).scalar() == 1
        with pytest.raises(OperationalError, match="readonly"):
            reading.execute(text("DELETE FROM work_orders"))
        # A reader's open snapshot does not hold the writer up either.
        assert service.handle_alarm(Alarm("pump-race", NOW, "VIB", Severity.HIGH, "shaking")) is not None
    service.close()
