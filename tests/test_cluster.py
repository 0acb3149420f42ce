"""Three gateways share one plant through PostgreSQL and one broker; one of them is killed mid-stream.

Counted, not assumed: the publisher records every (device, timestamp) the broker acknowledged; the
gateways are real processes (``pmgw run``); the lease log in PostgreSQL says who owned which unit when.
"""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, text

from gateway.auth.store import IdentityStore
from gateway.broker import Mosquitto, free_port
from gateway.cluster.assign import Unit, owner_of, partition_of
from gateway.cluster.coordinator import Coordinator
from gateway.cluster.schema import ClusterConfig
from gateway.keyring import Keyring
from tests.conftest import gateway_document, wait_until
from tests.processes import FleetPublisher, GatewayProcess
from tests.servers import PostgreSQL
from tests.test_modbus import until

DEVICES = [f"pump-{n:02d}" for n in range(1, 13)]
PARTITIONS = 12
SOURCE = "test-broker"


@pytest.fixture
def postgres() -> Any:
    server = PostgreSQL().start()
    yield server
    server.stop()


def cluster_document(broker: Mosquitto, postgres: PostgreSQL, directory: Path, gateway_id: str) -> dict[str, Any]:
    document = gateway_document(broker.port, directory)
    document["assets"] = [{"id": device, "type": "pump", "model": "Etanorm 80-250", "serial": f"S{n}",
                           "site": "north", "criticality": "high"} for n, device in enumerate(DEVICES)]
    # One client id for every gateway: partition k is the session <client_id>-p<k>, whoever runs it.
    document["sources"][0]["client_id"] = "pmgw-plant"
    document["ticketing"] = {"database_url": postgres.url}
    document["auth"] = {"keyring_file": str(directory / "gateway.key")}
    document["cluster"] = {"gateway_id": gateway_id, "partitions": PARTITIONS, "lease_s": 4, "renew_every_s": 0.5,
                           "checkpoint_every_s": 1}
    # The live sections are the same on every member (a cluster keeps detector state in the database).
    document["detectors"] = {"warmup_samples": 60, "forecast": {"enabled": False}}
    return document


def stored(directory: Path) -> set[tuple[str, float]]:
    database = directory / "telemetry.db"
    if not database.exists():
        return set()
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=30) as connection:
        return set(connection.execute("SELECT device_id, ts FROM readings WHERE metric = 'vibration'").fetchall())


def owners(database: Any) -> dict[str, str]:
    """unit -> owner, from the lease table (empty until the first gateway made it)."""
    with database.connect() as connection:
        if connection.execute(text("SELECT to_regclass('cluster_leases')")).scalar() is None:
            return {}
        return dict(connection.execute(text("SELECT unit, owner FROM cluster_leases WHERE expires_at > now()")).all())


def units_of(health: dict[str, Any] | None) -> set[str]:
    return set(((health or {}).get("cluster") or {}).get("units") or [])


def test_three_gateways_own_each_device_once_and_take_over_a_killed_one(
        mosquitto: Mosquitto, postgres: PostgreSQL, tmp_path: Path) -> None:
    Keyring.load(tmp_path / "plant.key")  # the plant's keys, copied to every gateway (chains verify anywhere)
    gateways: dict[str, GatewayProcess] = {}
    directories: dict[str, Path] = {}
    for name in ("gw-a", "gw-b", "gw-c"):
        directory = directories[name] = tmp_path / name
        directory.mkdir()
        shutil.copy(tmp_path / "plant.key", directory / "gateway.key")
        document = cluster_document(mosquitto, postgres, directory, name)
        document["api"]["port"] = free_port()
        gateways[name] = GatewayProcess(document, directory)
    database = create_engine(postgres.url)
    identities = IdentityStore(postgres.url, 5, 60, ())
    _, key = identities.create_key("tests", "admin", "tests")
    identities.close()
    publisher = None
    try:
        for process in gateways.values():
            process.start(wait=False)
        every_unit = {f"mqtt/{SOURCE}/{k}" for k in range(PARTITIONS)}
        wait_until(lambda: set(owners(database)) == every_unit and len(set(owners(database).values())) == 3,
                   timeout=60, what="every unit owned, by three gateways")
        # Each gateway runs the units the lease table gives it, and no unit runs twice; and the start's
        # hand-overs (members joining one by one) are over: every unit is where the three members place it.
        planned = {unit: owner_of(unit, sorted(gateways)) for unit in every_unit}
        wait_until(lambda: sorted(u for p in gateways.values() for u in units_of(p.health())) == sorted(every_unit)
                   and {u: name for name, p in gateways.items() for u in units_of(p.health())} == planned,
                   timeout=30, what="each unit running on exactly one gateway, the one the plan names")
        publisher = FleetPublisher(mosquitto, DEVICES, rate_per_s=120)  # 10 messages/s per device
        publisher.start()
        time.sleep(12)  # every device past its warm-up (60 samples), detector state saved each second

        # The victim: the gateway owning the most units; the faulty device: one of its own.
        table = owners(database)
        victim = max(gateways, key=lambda name: sum(owner == name for owner in table.values()))
        victims_units = {unit for unit, owner in table.items() if owner == victim}
        faulty = next(d for d in DEVICES if f"mqtt/{SOURCE}/{partition_of(d, PARTITIONS)}" in victims_units)
        gateways[victim].kill()
        killed_at = time.time()
        publisher.fault(faulty, seconds=20)  # starts during the takeover, when nobody runs the device
        survivors = [name for name in gateways if name != victim]
        wait_until(lambda: set(owners(database)) == every_unit and set(owners(database).values()) <= set(survivors),
                   timeout=30, what="the killed gateway's units taken over")
        takeover_s = time.time() - killed_at
        # Any member's /health shows the whole cluster's ownership (as of its last round).
        wait_until(lambda: (gateways[survivors[0]].health() or {})["cluster"]["owners"] == owners(database),
                   timeout=10, what="a survivor's /health showing every unit's owner")
        # The successor scores the faulty device from the state saved before the kill: no new warm-up.
        successor = owners(database)[f"mqtt/{SOURCE}/{partition_of(faulty, PARTITIONS)}"]
        status = httpx.get(f"{gateways[successor].api}/api/v1/devices/{faulty}/detector",
                           headers={"Authorization": f"Bearer {key}"}, timeout=10).json()
        assert not status["warming_up"] and status["samples"] >= 100, status
        time.sleep(10)
        publisher.stop()
        acknowledged = publisher.acknowledged

        def union() -> set[tuple[str, float]]:
            return set().union(*(stored(directory) for directory in directories.values()))

        wait_until(lambda: acknowledged <= union(), timeout=60, what="every acknowledged reading stored")
        missing = acknowledged - union()
        print(f"takeover {takeover_s:.1f}s; published {publisher.published}, acknowledged {len(acknowledged)}, "
              f"missing {len(missing)}")
        assert len(acknowledged) > 2500 and not missing

        # Stored once: the survivors never both stored a reading; the only repeats are the victim's last,
        # unacknowledged messages, which the broker gave to the successor again.
        first, second = (stored(directories[name]) for name in survivors)
        assert not first & second
        repeated = stored(directories[victim]) & (first | second)
        assert all(ts >= killed_at - 3 for _, ts in repeated), sorted(repeated)[:5]

        # No unit was ever owned by two gateways at once (the lease log, in the database's time).
        with database.connect() as connection:
            log = connection.execute(text(
                "SELECT unit, owner, acquired_at, COALESCE(ended_at, now()) FROM cluster_lease_log "
                "ORDER BY unit, acquired_at")).all()
        by_unit: dict[str, list[tuple[str, datetime, datetime]]] = {}
        for unit, owner, began, ended in log:
            by_unit.setdefault(unit, []).append((owner, began, ended))
        for unit, spans in by_unit.items():
            for (_, _, ended), (owner, began, _) in zip(spans, spans[1:]):
                assert began >= ended, f"{unit}: {owner} took it at {began} before the last owner's end at {ended}"

        # The successor raised the fault exactly once (and nothing on the other devices).
        health = gateways[successor].health() or {}
        assert health["cluster"]["counts"].get("states_adopted", 0) >= 1
        with database.connect() as connection:
            orders = connection.execute(text(
                "SELECT code, failure_mode, origin FROM work_orders WHERE device_id = :device"),
                {"device": faulty}).all()
            others = connection.execute(text(
                "SELECT COUNT(*) FROM work_orders WHERE device_id <> :device"), {"device": faulty}).scalar()
        print(f"faulty {faulty} (victim {victim}, successor {successor}): {orders}; other devices' orders: {others}")
        assert len(orders) == 1 and orders[0].failure_mode == "VIB"
        assert others == 0

        # A clean stop hands the units over at once (released, not left to expire), and under traffic each
        # message is stored once: what the stopping gateway stored it acknowledged before letting go.
        publisher = FleetPublisher(mosquitto, DEVICES, rate_per_s=120, client_id="fleet-2")
        publisher.start()
        time.sleep(2)
        gateways[survivors[0]].terminate()
        wait_until(lambda: set(owners(database).values()) == {survivors[1]} and set(owners(database)) == every_unit,
                   timeout=20, what="the stopped gateway's units taken by the last one")
        time.sleep(2)
        publisher.stop()
        acknowledged = publisher.acknowledged
        wait_until(lambda: acknowledged <= union(), timeout=60, what="every acknowledged reading stored")
        first, second = (stored(directories[name]) for name in survivors)
        assert not first & second, sorted(first & second)[:5]
        with database.connect() as connection:
            released = connection.execute(text(
                "SELECT COUNT(*) FROM cluster_lease_log WHERE owner = :owner AND ended_how = 'released'"),
                {"owner": survivors[0]}).scalar()
        assert released >= 1
        gateways[survivors[1]].terminate()
    finally:
        if publisher is not None and not publisher._stop.is_set():
            publisher.stop()
        for process in gateways.values():
            process.__exit__()
        database.dispose()


def test_a_gateway_that_loses_the_database_stops_its_units_before_their_leases_run_out(
        mosquitto: Mosquitto, postgres: PostgreSQL, tmp_path: Path, start_gateway: Any) -> None:
    document = cluster_document(mosquitto, postgres, tmp_path, "gw-solo")
    lease_s, renew_s = document["cluster"]["lease_s"], document["cluster"]["renew_every_s"]
    gateway = start_gateway(document)
    wait_until(lambda: len(gateway.get("/health")["cluster"]["units"]) == PARTITIONS, timeout=30,
               what="every unit taken")
    assert gateway.get("/health")["connectors"], "its partitions' connectors run"
    halted_at = time.time()
    postgres.halt()
    try:
        health = wait_until(lambda: (h := httpx.get(f"{gateway.url}/health", timeout=5).json())["connectors"] == []
                            and h, timeout=lease_s * 2, what="the units stopped")
        # Its last renewal was at most one round before the halt, so its leases last until at least
        # halted_at - renew_s + lease_s: it stopped before then, so no successor could have run beside it.
        assert health["cluster"]["fenced_at"] - halted_at < lease_s - renew_s
        assert health["status"] == "degraded"
        assert any(p.startswith("cluster database out of reach") for p in health["problems"]), health["problems"]
        ready = httpx.get(f"{gateway.url}/health/ready", timeout=5)
        assert ready.status_code == 503 and any("cluster database" in r for r in ready.json()["reasons"])
    finally:
        postgres.resume()
    wait_until(lambda: len(gateway.get("/health")["connectors"]) > 0 and gateway.get("/health")["cluster"]["last_error"]
               is None, timeout=30, what="the units taken again")
    # Taken again under new epochs; the log still never shows one unit held twice at a time.
    database = create_engine(postgres.url)
    with database.connect() as connection:
        spans = connection.execute(text("SELECT unit, acquired_at, COALESCE(ended_at, now()) FROM cluster_lease_log "
                                        "ORDER BY unit, acquired_at")).all()
    database.dispose()
    for (unit, _, ended), (next_unit, began, _) in zip(spans, spans[1:]):
        assert unit != next_unit or began >= ended, (unit, began, ended)


def test_a_cluster_needs_postgresql_and_splits_every_device_into_exactly_one_unit(tmp_path: Path) -> None:
    from gateway.cluster.assign import unit_devices, units_of
    from gateway.config import ConfigError, parse_config

    document = gateway_document(1883, tmp_path)
    document["cluster"] = {"gateway_id": "gw-a", "lease_s": 4, "renew_every_s": 3}
    with pytest.raises(ConfigError) as refused:
        parse_config(document, "test")
    assert any(p.startswith("cluster: value error, renew_every_s must be at most half of lease_s")
               for p in refused.value.problems), refused.value.problems
    document["cluster"]["renew_every_s"] = 1
    with pytest.raises(ConfigError) as refused:
        parse_config(document, "test")
    assert "ticketing.database_url: the gateways of a cluster share it, which needs PostgreSQL, not sqlite" in \
        refused.value.problems

    document["ticketing"]["database_url"] = "postgresql+psycopg://pmgw@127.0.0.1:5432/pmgw"
    document["assets"] += [{"id": f"pump-{n}", "type": "pump", "model": "M", "serial": f"X{n}", "site": "north"}
                           for n in range(10, 40)]
    document["sources"].append({"type": "modbus", "name": "line-1", "host": "127.0.0.1", "devices": [
        {"device": "motor-01", "registers": [{"metric": "current", "table": "holding", "address": 0}]}]})
    config = parse_config(document, "test")
    units = units_of(config.sources, 12)
    assert [u.id for u in units] == [f"mqtt/test-broker/{k}" for k in range(12)] + ["source/line-1"]
    owned = [d for u in units for d in unit_devices(u, config.sources, sorted(a.id for a in config.assets), 12)]
    # Every asset in exactly one unit; the Modbus source's device is never an MQTT partition's.
    assert sorted(owned) == sorted(a.id for a in config.assets)
    assert unit_devices(units[-1], config.sources, [a.id for a in config.assets], 12) == ["motor-01"]


def test_a_change_made_through_one_member_comes_into_force_on_the_others_and_survives_their_restarts(
        mosquitto: Mosquitto, postgres: PostgreSQL, tmp_path: Path, start_gateway: Any) -> None:
    Keyring.load(tmp_path / "plant.key")
    documents = {}
    for name in ("gw-a", "gw-b"):
        directory = tmp_path / name
        directory.mkdir()
        shutil.copy(tmp_path / "plant.key", directory / "gateway.key")
        documents[name] = cluster_document(mosquitto, postgres, directory, name)
    first, second = start_gateway(documents["gw-a"]), start_gateway(documents["gw-b"])
    detectors = first.get("/config/sections/detectors")["effective"]
    detectors["rules"] = [{"device_type": "pump", "metric": "vibration", "high": 5.5, "failure_mode": "VIB"}]
    made = first.http.put("/config/sections/detectors", json={"value": detectors, "reason": "tighter"})
    assert made.status_code == 200, made.text
    number = made.json()["revision"]["number"]
    wait_until(lambda: second.get("/config")["revision"]["number"] == number, timeout=20,
               what="the other member following the revision")
    assert [rule.high for rule in second.gateway.config.detectors.rules] == [5.5]
    assert second.gateway.config.cluster.gateway_id == "gw-b"  # its own settings are its own

    # A change made on a member that has not yet seen the newest revision is refused, not a silent overwrite.
    second.gateway.settings.revision = second.gateway.settings.store.get(number - 1)
    refused = second.http.put("/config/sections/detectors", json={"value": detectors, "reason": "stale"})
    assert refused.status_code == 409 and "another gateway" in refused.text, refused.text
    wait_until(lambda: second.get("/config")["revision"]["number"] == number, timeout=20, what="caught up again")

    second.stop()
    again = start_gateway(documents["gw-b"])  # its file is unchanged: the runtime revision stays in force
    status = again.get("/config")
    assert status["revision"]["number"] == number and status["runtime_changes"] is True, status
    assert [rule.high for rule in again.gateway.config.detectors.rules] == [5.5]


class SlowStartHost:
    """Four units, one of which takes several leases' time to start (a broker slow to answer, a connector
    draining a backlog): what the coordinator needs of a gateway, and nothing else."""

    def __init__(self, slow_unit: str, slow_s: float) -> None:
        self.slow_unit, self.slow_s = slow_unit, slow_s
        self.running: set[str] = set()

    def units(self) -> list[Unit]:
        return [Unit(f"mqtt/slow/{k}", "slow", k) for k in range(4)]

    def unit_devices(self, unit: Unit) -> list[str]:
        return []

    def unit_source(self, unit: Unit) -> str:
        return unit.id

    async def start_unit(self, unit: Unit, source: str) -> None:
        if unit.id == self.slow_unit:
            await asyncio.sleep(self.slow_s)
        self.running.add(unit.id)

    async def stop_unit(self, unit: Unit) -> None:
        self.running.discard(unit.id)


class NoStates:
    def state_format(self) -> str:
        return "none"

    def export_states(self, device_ids: list[str]) -> dict[str, bytes]:
        return {}

    def adopt_states(self, states: dict[str, bytes]) -> list[str]:
        return []

    def forget(self, device_ids: list[str]) -> None:
        pass


async def test_a_slow_start_never_lets_the_gateways_other_leases_or_its_membership_lapse(
        postgres: PostgreSQL, tmp_path: Path) -> None:
    """Renewing is not held up by taking or giving up units: while one unit takes three leases' time to
    start, the gateway stays a live member and keeps every lease it holds (otherwise the others would take
    its running units and run them beside it)."""
    config = ClusterConfig(gateway_id="gw-slow", lease_s=2, renew_every_s=0.5)
    host = SlowStartHost("mqtt/slow/3", slow_s=3 * config.lease_s)
    coordinator = Coordinator(config, postgres.url, host, NoStates(), Keyring.load(tmp_path / "plant.key"), {})
    database = create_engine(postgres.url)

    def members() -> list[str]:
        with database.connect() as connection:
            return list(connection.execute(text(
                "SELECT gateway_id FROM cluster_members WHERE heartbeat_at > now() - make_interval(secs => 2)"
            )).scalars())

    task = asyncio.create_task(coordinator.run())
    try:
        await until(lambda: len(host.running) == 3, 15, "the three quick units running")
        began = time.monotonic()
        checks = 0
        while "mqtt/slow/3" not in host.running:
            leased = await asyncio.to_thread(owners, database)
            assert leased == {unit.id: "gw-slow" for unit in host.units()}, leased
            assert await asyncio.to_thread(members) == ["gw-slow"]
            checks += 1
            await asyncio.sleep(0.2)
        assert time.monotonic() - began > 2 * config.lease_s and checks > 10
        assert coordinator.counts["lost"] == 0 and coordinator.counts["taken"] == 4
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert await asyncio.to_thread(owners, database) == {}, "a clean stop releases every lease"
    database.dispose()
