"""A durable store-and-forward buffer on SQLite (WAL) between the pipeline and a remote sink.

A batch is committed to disk before ``append`` returns, so a reading the
buffer accepted survives ``kill -9`` of the gateway; it is deleted only after
the sink acknowledged it (at least once: InfluxDB overwrites a point with the
same series and timestamp, so a replay is harmless). Batches leave oldest data
first. When the buffer is full it either makes producers wait (``block``) or
drops the oldest batches, counting the loss (``drop_oldest``).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

log = logging.getLogger(__name__)

FullPolicy = Literal["block", "drop_oldest"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS pending (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    first_ts REAL NOT NULL,
    created REAL NOT NULL,
    lines BLOB NOT NULL,
    count INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS pending_order ON pending (first_ts, id);
CREATE TABLE IF NOT EXISTS dead_letters (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created REAL NOT NULL,
    line TEXT NOT NULL,
    reason TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


@dataclass(frozen=True)
class Batch:
    """One or more stored batches, oldest first, merged into one write."""

    ids: tuple[int, ...]
    first_ts: float
    lines: list[str]
    attempts: int


class BufferClosed(Exception):
    pass


class DurableBuffer:
    def __init__(self, path: Path, max_bytes: int, max_age_s: float, when_full: FullPolicy) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.max_age_s = max_age_s
        self.when_full = when_full
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, timeout=30, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        # NORMAL survives a killed process (the WAL is in the OS's hands); FULL would
        # also survive power loss at a large cost in write rate.
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._lock = threading.Condition()
        self._closed = False
        row = self._db.execute("SELECT COALESCE(SUM(bytes), 0), COALESCE(SUM(count), 0) FROM pending").fetchone()
        self.pending_bytes, self.pending_readings = int(row[0]), int(row[1])

    # -- producer side ---------------------------------------------------------------

    def append(self, lines: list[str], first_ts: float) -> None:
        """Commit a batch; with ``block`` wait while the buffer is full."""
        if not lines:
            return
        payload = zlib.compress("\n".join(lines).encode(), 1)
        with self._lock:
            while self.pending_bytes + len(payload) > self.max_bytes and self.pending_bytes > 0:
                if self._closed:
                    raise BufferClosed("buffer closed while waiting for space")
                if self.when_full == "drop_oldest":
                    self._drop_oldest("buffer full")
                else:
                    self._bump("blocked_appends")
                    self._lock.wait(0.5)
            self._db.execute(
                "INSERT INTO pending (first_ts, created, lines, count, bytes) VALUES (?, ?, ?, ?, ?)",
                (first_ts, time.time(), payload, len(lines), len(payload)),
            )
            self.pending_bytes += len(payload)
            self.pending_readings += len(lines)
            self._lock.notify_all()

    def _drop_oldest(self, why: str) -> None:
        row = self._db.execute("SELECT id, count, bytes FROM pending ORDER BY first_ts, id LIMIT 1").fetchone()
        if row is None:
            return
        batch_id, count, size = row
        self._db.execute("DELETE FROM pending WHERE id = ?", (batch_id,))
        self.pending_bytes -= size
        self.pending_readings -= count
        self._bump("dropped_readings", count)
        log.error("buffer %s: %s, dropped the oldest batch of %d readings", self.path.name, why, count)

    # -- forwarder side --------------------------------------------------------------

    def next_batch(self, timeout: float, max_lines: int = 1) -> Batch | None:
        """The oldest pending batches, merged up to ``max_lines`` lines (at least one batch), waiting up
        to ``timeout`` for one. After an outage the backlog is many small batches (each the pipeline's
        batch of that moment): merging them makes the replay as fast as full-size writes."""
        with self._lock:
            self._expire()
            rows = self._oldest(max_lines)
            if not rows and not self._closed:
                self._lock.wait(timeout)
                rows = self._oldest(max_lines)
        if not rows:
            return None
        lines: list[str] = []
        for _, _, payload, _, _ in rows:
            lines += zlib.decompress(payload).decode().split("\n")
        return Batch(tuple(row[0] for row in rows), rows[0][1], lines, max(row[3] for row in rows))

    def _oldest(self, max_lines: int) -> list[tuple[Any, ...]]:
        rows: list[tuple[Any, ...]] = []
        total = 0
        cursor = self._db.execute(
            "SELECT id, first_ts, lines, attempts, count FROM pending ORDER BY first_ts, id")
        for row in cursor:
            if rows and total + row[4] > max_lines:
                break
            rows.append(row)
            total += row[4]
        cursor.close()
        return rows

    def _expire(self) -> None:
        cutoff = time.time() - self.max_age_s
        while True:
            row = self._db.execute("SELECT created FROM pending ORDER BY first_ts, id LIMIT 1").fetchone()
            if row is None or row[0] >= cutoff:
                return
            self._drop_oldest(f"batch older than {self.max_age_s:.0f}s")

    def acknowledge(self, batch: Batch) -> None:
        with self._lock:
            self._db.execute("BEGIN")
            for batch_id in batch.ids:
                row = self._db.execute("SELECT count, bytes FROM pending WHERE id = ?", (batch_id,)).fetchone()
                if row is None:  # dropped meanwhile by drop_oldest
                    continue
                self._db.execute("DELETE FROM pending WHERE id = ?", (batch_id,))
                self.pending_readings -= row[0]
                self.pending_bytes -= row[1]
                self._bump("forwarded_readings", row[0])
            self._db.execute("COMMIT")
            self._lock.notify_all()

    def record_attempt(self, batch: Batch) -> None:
        with self._lock:
            self._db.executemany("UPDATE pending SET attempts = attempts + 1 WHERE id = ?",
                                 [(batch_id,) for batch_id in batch.ids])

    def dead_letter(self, lines: list[str], reason: str) -> None:
        with self._lock:
            self._db.executemany(
                "INSERT INTO dead_letters (created, line, reason) VALUES (?, ?, ?)",
                [(time.time(), line, reason) for line in lines],
            )
            self._bump("dead_letters", len(lines))

    def dead_letters(self, limit: int = 100) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT created, line, reason FROM dead_letters ORDER BY id DESC LIMIT ?", (limit,)
            ).fetchall()
        return [{"at": at, "line": line, "reason": reason} for at, line, reason in rows]

    # -- bookkeeping -----------------------------------------------------------------

    def _bump(self, name: str, by: int = 1) -> None:
        self._db.execute(
            "INSERT INTO counters VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET value = value + excluded.value",
            (name, by),
        )

    def counters(self) -> dict[str, int]:
        with self._lock:
            return dict(self._db.execute("SELECT name, value FROM counters").fetchall())

    def diagnostics(self) -> dict[str, Any]:
        with self._lock:
            oldest = self._db.execute("SELECT MIN(created) FROM pending").fetchone()[0]
            batches = self._db.execute("SELECT COUNT(*) FROM pending").fetchone()[0]
        return {
            "pending_batches": batches,
            "pending_readings": self.pending_readings,
            "pending_bytes": self.pending_bytes,
            "max_bytes": self.max_bytes,
            "oldest_pending_age_s": None if oldest is None else round(time.time() - oldest, 3),
            "when_full": self.when_full,
            **self.counters(),
        }

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._lock.notify_all()
        with self._lock:
            self._db.close()
