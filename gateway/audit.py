"""The audit log: every write, sign-in, user and key change, and each work order's chain head.

Append-only and chained: each entry carries an HMAC (a key from the keyring,
kept outside the database) over its content and the previous entry's MAC, so an
entry edited, inserted or removed in the middle breaks the chain for anyone
verifying, and a database writer without the keyring cannot produce entries that
verify. Work-order chains anchor their head and length here, so removing the
last events of an order is detected too. Removing the log's own last entries is
caught by the tail witness: a file beside the keyring (outside the database) that
holds the sequence number and MAC of the newest entry this gateway wrote.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

import orjson
from sqlalchemy import JSON, Connection, Float, Integer, String, func, insert, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from gateway.keyring import Keyring
from gateway.sqldb import create_tables, make_engine

PURPOSE = "audit log"
GENESIS = "0" * 64
ANCHOR = "workorder.chain"


class Base(DeclarativeBase):
    pass


class Entry(Base):
    __tablename__ = "audit_log"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[float] = mapped_column(Float)
    actor: Mapped[str] = mapped_column(String(100))
    action: Mapped[str] = mapped_column(String(60), index=True)
    target: Mapped[str] = mapped_column(String(200), index=True)
    outcome: Mapped[str] = mapped_column(String(40))
    details: Mapped[dict[str, Any]] = mapped_column(JSON)
    key_id: Mapped[str] = mapped_column(String(16))
    mac: Mapped[str] = mapped_column(String(64))


def _content(previous: str, entry: Entry) -> bytes:
    return orjson.dumps({"previous": previous, "seq": entry.seq, "at": entry.at, "actor": entry.actor,
                         "action": entry.action, "target": entry.target, "outcome": entry.outcome,
                         "details": entry.details}, option=orjson.OPT_SORT_KEYS)


class AuditLog:
    def __init__(self, database_url: str, keyring: Keyring, witness: Path | None = None) -> None:
        self.engine = make_engine(database_url)
        create_tables(Base.metadata, self.engine)
        self.keyring = keyring
        self.witness = witness
        self.recorded = 0

    def close(self) -> None:
        self.engine.dispose()

    def record(self, actor: str, action: str, target: str = "", outcome: str = "ok",
               details: dict[str, Any] | None = None) -> int:
        """Append one entry; returns its sequence number."""
        return self.record_many([(actor, action, target, outcome, details)])

    def record_many(self, items: list[tuple[str, str, str, str, dict[str, Any] | None]]) -> int:
        """Append ``(actor, action, target, outcome, details)`` entries in one transaction, in order; returns the
        last sequence number (0: nothing appended)."""
        if not items:
            return 0
        with self.engine.begin() as connection:
            seq, mac = self._append(connection, items)
        self._appended(len(items), seq, mac)
        return seq

    def _append(self, connection: Connection, items: list[tuple[str, str, str, str, dict[str, Any] | None]]
                ) -> tuple[int, str]:
        """Insert the entries in the connection's open transaction: (last sequence number, its MAC)."""
        if connection.dialect.name == "postgresql":
            # One writer at a time across gateways: the chain has no forks. Taken last in a ticketing transaction
            # (anchors go in just before its commit): whoever holds it waits for no other lock, so no deadlock.
            connection.exec_driver_sql("SELECT pg_advisory_xact_lock(4243)")
        last = connection.execute(select(Entry.seq, Entry.mac).order_by(Entry.seq.desc()).limit(1)).first()
        seq, mac = last if last else (0, GENESIS)
        now = time.time()
        rows = []
        for actor, action, target, outcome, details in items:
            seq += 1
            row = {"seq": seq, "at": now, "actor": actor[:100], "action": action[:60], "target": target[:200],
                   "outcome": outcome[:40], "details": details or {}}
            row["key_id"], mac = self.keyring.mac(PURPOSE, _content(mac, SimpleNamespace(**row)))
            row["mac"] = mac
            rows.append(row)
        connection.execute(insert(Entry), rows)
        return seq, mac

    def _appended(self, count: int, seq: int, mac: str) -> None:
        """Once the entries have committed (a witness ahead of the log would call it cut)."""
        self.recorded += count
        if self.witness is not None:
            _witness(self.witness, seq, mac)

    def entries(self, limit: int = 100, offset: int = 0, action: str | None = None, actor: str | None = None,
                target: str | None = None) -> tuple[int, list[dict[str, Any]]]:
        """(total matching, a page of entries, newest first)."""
        query = select(Entry)
        for column, value in ((Entry.action, action), (Entry.actor, actor), (Entry.target, target)):
            if value is not None:
                query = query.where(column == value)
        with Session(self.engine) as session:
            total = session.scalar(select(func.count()).select_from(query.order_by(None).subquery())) or 0
            rows = session.scalars(query.order_by(Entry.seq.desc()).limit(limit).offset(offset)).all()
            return total, [_as_dict(row) for row in rows]

    def anchor_many(self, heads: list[tuple[str, str, int, str]], within: Connection) -> Callable[[], None]:
        """Anchor ``(code, head, length, actor)`` chain heads (``ticketing.chain.ChainAnchors``).

        When the log lives in the database of ``within`` (a connection in the caller's open transaction, the
        default set-up) the anchors are written in that transaction: they commit with the events they anchor,
        so a crash between the two cannot leave a chain that verifies unanchored. Otherwise they are written
        in a transaction of their own by the returned callable, which the caller runs once its transaction
        has committed (in both cases it finishes the anchoring)."""
        entries: list[tuple[str, str, str, str, dict[str, Any] | None]] = [
            (actor, ANCHOR, code, "ok", {"head": head, "length": length}) for code, head, length, actor in heads]
        if not entries:
            return _nothing
        if self.shares(within):  # the same database: one transaction
            seq, mac = self._append(within, entries)
            return lambda: self._appended(len(entries), seq, mac)

        def record() -> None:
            self.record_many(entries)

        return record

    def shares(self, within: Connection) -> bool:
        return within.engine.url == self.engine.url

    def anchors(self) -> dict[str, dict[str, Any]]:
        """Every work order's last anchored chain head at once (a whole store verified, e.g. a backup)."""
        with Session(self.engine) as session:
            rows = session.execute(select(Entry.target, Entry.details).where(Entry.action == ANCHOR).order_by(Entry.seq))
            return {code: dict(details) for code, details in rows}

    def latest_anchor(self, code: str) -> dict[str, Any] | None:
        """The last chain head a work order anchored here: ``{"head", "length"}``."""
        with Session(self.engine) as session:
            entry = session.scalar(select(Entry).where(Entry.action == ANCHOR, Entry.target == code)
                                   .order_by(Entry.seq.desc()).limit(1))
            return None if entry is None else dict(entry.details)

    def verify(self) -> dict[str, Any]:
        """Recompute every MAC in order: where the log breaks, if it does."""
        previous = GENESIS
        expected_seq = 1
        with Session(self.engine) as session:
            count = 0
            # Plain rows, streamed: a log of millions of anchors is verified whole (a backup, a restore).
            rows = session.execute(select(Entry.__table__).order_by(Entry.seq).execution_options(yield_per=5000))
            for entry in rows:
                count += 1
                if entry.seq != expected_seq:
                    return _broken(count, entry.seq, f"entries {expected_seq}..{entry.seq - 1} are missing")
                if not self.keyring.verify(PURPOSE, entry.key_id, _content(previous, entry), entry.mac):
                    return _broken(count, entry.seq, f"entry {entry.seq} ({entry.action}) does not match its MAC: "
                                                     "it was changed, or written without the gateway's key")
                previous = entry.mac
                expected_seq += 1
        if self.witness is not None and (witnessed := _read_witness(self.witness)) is not None:
            seq, mac = witnessed
            if seq >= expected_seq:
                return _broken(count, seq, f"the log ends at entry {expected_seq - 1} but entry {seq} was written "
                                           "(the tail witness beside the keyring): its last entries were removed")
            with Session(self.engine) as session:
                stored = session.scalar(select(Entry.mac).where(Entry.seq == seq))
            if stored != mac:
                return _broken(count, seq, f"entry {seq} is not the one this gateway wrote (the tail witness): "
                                           "the log was rewritten from there")
        return {"valid": True, "entries": count, "broken_at": None, "reason": None}



def _nothing() -> None:
    return None


def _read_witness(path: Path) -> tuple[int, str] | None:
    parts = path.read_text().split() if path.exists() else []
    return (int(parts[0]), parts[1]) if len(parts) == 2 and parts[0].isdigit() else None


def _witness(path: Path, seq: int, mac: str) -> None:
    """Never moves back: an entry numbered at or below the witnessed one means the log was cut
    and is growing again over the gap, and the witness must keep the proof. Replaced whole, so a
    reader never sees half of it; gateways sharing one database may share the file."""
    witnessed = _read_witness(path)
    if witnessed is not None and witnessed[0] >= seq:
        return
    temporary = path.with_name(f"{path.name}.{os.getpid()}.new")
    temporary.write_text(f"{seq} {mac}\n")
    os.replace(temporary, path)


def _broken(count: int, seq: int, reason: str) -> dict[str, Any]:
    return {"valid": False, "entries": count, "broken_at": seq, "reason": reason}


def _as_dict(entry: Entry) -> dict[str, Any]:
    return {"seq": entry.seq, "at": entry.at, "actor": entry.actor, "action": entry.action, "target": entry.target,
            "outcome": entry.outcome, "details": entry.details}
