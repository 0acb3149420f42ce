"""Members, leases and handed-over detector states in the shared PostgreSQL.

Every time is the database's ``now()``, so the gateways' clocks never have to agree. A lease is taken
only when it is free or expired, under a row lock, so two gateways never hold one unit at once; each
taking and ending of a lease is kept in ``cluster_lease_log`` (who, which epoch, from when to when),
which is how an operator (and the tests) check that no unit was ever owned twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import create_engine, text
from sqlalchemy.engine import Connection

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS cluster_members (
        gateway_id TEXT PRIMARY KEY, incarnation TEXT NOT NULL, started_at TIMESTAMPTZ NOT NULL,
        heartbeat_at TIMESTAMPTZ NOT NULL, detail JSONB NOT NULL DEFAULT '{}')""",
    """CREATE TABLE IF NOT EXISTS cluster_leases (
        unit TEXT PRIMARY KEY, owner TEXT NOT NULL, incarnation TEXT NOT NULL, epoch BIGINT NOT NULL,
        acquired_at TIMESTAMPTZ NOT NULL, expires_at TIMESTAMPTZ NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS cluster_lease_log (
        unit TEXT NOT NULL, epoch BIGINT NOT NULL, owner TEXT NOT NULL, acquired_at TIMESTAMPTZ NOT NULL,
        ended_at TIMESTAMPTZ, ended_how TEXT, PRIMARY KEY (unit, epoch))""",
    """CREATE TABLE IF NOT EXISTS cluster_detector_states (
        device_id TEXT PRIMARY KEY, state_format TEXT NOT NULL, state BYTEA NOT NULL, key_id TEXT NOT NULL,
        tag TEXT NOT NULL, saved_at TIMESTAMPTZ NOT NULL, saved_by TEXT NOT NULL)""",
)
# Any constant: gateways starting together create the tables one at a time.
SCHEMA_LOCK = 0x706D6777


@dataclass(frozen=True)
class StoredState:
    device_id: str
    state: bytes
    key_id: str
    tag: str
    saved_by: str


class LeaseStore:
    def __init__(self, database_url: str, gateway_id: str, incarnation: str, lease_s: float) -> None:
        if not database_url.startswith("postgresql"):
            raise ValueError("a cluster keeps ownership in PostgreSQL: cluster.database_url (or "
                             "ticketing.database_url) must be a postgresql:// URL")
        self.gateway_id = gateway_id
        self.incarnation = incarnation
        self.lease_s = lease_s
        # A database that stops answering must not hold the coordinator past its lease.
        self.engine = create_engine(database_url, pool_pre_ping=True, pool_size=2, hide_parameters=True, connect_args={
            "connect_timeout": max(1, int(lease_s / 3)), "options": f"-c statement_timeout={int(lease_s * 300)}"})
        with self.engine.begin() as connection:
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": SCHEMA_LOCK})
            for statement in SCHEMA:
                connection.execute(text(statement))

    def _me(self, **more: Any) -> dict[str, Any]:
        return {"me": self.gateway_id, "incarnation": self.incarnation, "lease": self.lease_s, **more}

    def heartbeat(self, detail: str) -> str | None:
        """Say this gateway is alive; the incarnation that heartbeat under this id before, when another
        process did (two gateways configured with one id)."""
        with self.engine.begin() as connection:
            before = connection.execute(text(
                "SELECT incarnation FROM cluster_members WHERE gateway_id = :me "
                "AND heartbeat_at > now() - make_interval(secs => :lease) FOR UPDATE"), self._me()).scalar()
            connection.execute(text(
                "INSERT INTO cluster_members (gateway_id, incarnation, started_at, heartbeat_at, detail) "
                "VALUES (:me, :incarnation, now(), now(), CAST(:detail AS JSONB)) "
                "ON CONFLICT (gateway_id) DO UPDATE SET heartbeat_at = now(), detail = excluded.detail, "
                "incarnation = excluded.incarnation, started_at = CASE WHEN cluster_members.incarnation = "
                "excluded.incarnation THEN cluster_members.started_at ELSE now() END"), self._me(detail=detail))
        return before if before is not None and before != self.incarnation else None

    def live_members(self) -> list[str]:
        with self.engine.connect() as connection:
            return sorted(connection.execute(text(
                "SELECT gateway_id FROM cluster_members WHERE heartbeat_at > now() - make_interval(secs => :lease)"),
                self._me()).scalars())

    def acquire(self, unit: str) -> int | None:
        """Take the unit when it is free, expired or already this process's: its new epoch, or None."""
        with self.engine.begin() as connection:
            row = connection.execute(text(
                "SELECT owner, incarnation, epoch, expires_at, expires_at <= now() AS expired "
                "FROM cluster_leases WHERE unit = :unit FOR UPDATE"), {"unit": unit}).first()
            if row is None:
                epoch = connection.execute(text(
                    "INSERT INTO cluster_leases (unit, owner, incarnation, epoch, acquired_at, expires_at) "
                    "VALUES (:unit, :me, :incarnation, 1, now(), now() + make_interval(secs => :lease)) "
                    "ON CONFLICT (unit) DO NOTHING RETURNING epoch"), self._me(unit=unit)).scalar()
                if epoch is None:  # another gateway inserted it meanwhile
                    return None
            elif row.expired or row.incarnation == self.incarnation:
                epoch = row.epoch + 1
                connection.execute(text(
                    "UPDATE cluster_leases SET owner = :me, incarnation = :incarnation, epoch = :epoch, "
                    "acquired_at = now(), expires_at = now() + make_interval(secs => :lease) WHERE unit = :unit"),
                    self._me(unit=unit, epoch=epoch))
                # Our own unexpired lease (this process lost track of it, e.g. after a fence) ends now, not at
                # its expiry, so the log never shows two epochs at once.
                _end_log(connection, unit, row.epoch, "expired" if row.expired else "retaken",
                         row.expires_at if row.expired else None)
            else:
                return None
            connection.execute(text(
                "INSERT INTO cluster_lease_log (unit, epoch, owner, acquired_at) VALUES (:unit, :epoch, :me, now())"),
                self._me(unit=unit, epoch=epoch))
            return epoch

    def renew(self, units: list[str]) -> set[str]:
        """Extend the leases this process still holds; the units renewed (the others are lost)."""
        if not units:
            return set()
        with self.engine.begin() as connection:
            return set(connection.execute(text(
                "UPDATE cluster_leases SET expires_at = now() + make_interval(secs => :lease) "
                "WHERE unit = ANY(:units) AND owner = :me AND incarnation = :incarnation AND expires_at > now() "
                "RETURNING unit"), self._me(units=list(units))).scalars())

    def release(self, units: list[str]) -> None:
        """Give the units up now (their connectors are stopped and their state saved), so a successor need
        not wait for the lease to run out."""
        if not units:
            return
        with self.engine.begin() as connection:
            released = connection.execute(text(
                "UPDATE cluster_leases SET expires_at = now() WHERE unit = ANY(:units) AND owner = :me "
                "AND incarnation = :incarnation AND expires_at > now() RETURNING unit, epoch"),
                self._me(units=list(units))).all()
            for unit, epoch in released:
                _end_log(connection, unit, epoch, "released", None)

    def leave(self) -> None:
        with self.engine.begin() as connection:
            connection.execute(text("DELETE FROM cluster_members WHERE gateway_id = :me AND incarnation = :incarnation"),
                               self._me())

    def owners(self) -> dict[str, str]:
        """unit -> the gateway holding an unexpired lease on it."""
        with self.engine.connect() as connection:
            return dict(connection.execute(text(
                "SELECT unit, owner FROM cluster_leases WHERE expires_at > now()")).all())

    def save_states(self, states: list[tuple[str, str, bytes, str, str]]) -> None:
        """(device, state format, state, key id, tag) each, replacing what was saved before."""
        if not states:
            return
        with self.engine.begin() as connection:
            connection.execute(text(
                "INSERT INTO cluster_detector_states (device_id, state_format, state, key_id, tag, saved_at, saved_by) "
                "VALUES (:device, :format, :state, :key_id, :tag, now(), :me) ON CONFLICT (device_id) DO UPDATE SET "
                "state_format = excluded.state_format, state = excluded.state, key_id = excluded.key_id, "
                "tag = excluded.tag, saved_at = excluded.saved_at, saved_by = excluded.saved_by"),
                [{"device": device, "format": fmt, "state": state, "key_id": key_id, "tag": tag, "me": self.gateway_id}
                 for device, fmt, state, key_id, tag in states])

    def load_states(self, devices: list[str], state_format: str) -> list[StoredState]:
        if not devices:
            return []
        with self.engine.connect() as connection:
            rows = connection.execute(text(
                "SELECT device_id, state, key_id, tag, saved_by FROM cluster_detector_states "
                "WHERE device_id = ANY(:devices) AND state_format = :format"),
                {"devices": list(devices), "format": state_format}).all()
        return [StoredState(row.device_id, bytes(row.state), row.key_id, row.tag, row.saved_by) for row in rows]

    def close(self) -> None:
        self.engine.dispose()


def _end_log(connection: Connection, unit: str, epoch: int, how: str, at: Any) -> None:
    connection.execute(text(
        "UPDATE cluster_lease_log SET ended_at = COALESCE(CAST(:at AS TIMESTAMPTZ), now()), ended_how = :how "
        "WHERE unit = :unit AND epoch = :epoch AND ended_at IS NULL"), {"unit": unit, "epoch": epoch, "how": how, "at": at})
