"""Embedded telemetry store on SQLite: the zero-setup default sink.

One row per (device, metric, timestamp): writing the same point twice
overwrites it, as InfluxDB does, so replays after a crash are harmless.
The latest value of each series is kept in its own small table so the API
answers "what is this pump doing now" without scanning history.
"""

from __future__ import annotations

import functools
import logging
import math
import sqlite3
import threading
from contextlib import closing
import time
from pathlib import Path
from typing import Any, Callable

from pydantic import BaseModel, ConfigDict, Field

from gateway.core import Quality, Reading, SeriesInfo

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS readings (
    device_id TEXT NOT NULL,
    metric TEXT NOT NULL,
    ts REAL NOT NULL,
    value REAL,
    quality TEXT NOT NULL,
    source TEXT NOT NULL,
    PRIMARY KEY (device_id, metric, ts)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS latest (
    device_id TEXT NOT NULL,
    metric TEXT NOT NULL,
    ts REAL NOT NULL,
    value REAL,
    quality TEXT NOT NULL,
    source TEXT NOT NULL,
    PRIMARY KEY (device_id, metric)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS rollups (
    device_id TEXT NOT NULL,
    metric TEXT NOT NULL,
    ts REAL NOT NULL,
    count INTEGER NOT NULL,
    mean REAL,
    min REAL,
    max REAL,
    PRIMARY KEY (device_id, metric, ts)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS series (
    device_id TEXT NOT NULL,
    metric TEXT NOT NULL,
    unit TEXT NOT NULL,
    data_type TEXT NOT NULL,
    updated_at REAL NOT NULL,
    PRIMARY KEY (device_id, metric)
) WITHOUT ROWID;
"""

# A rollup is recomputed from the raw rows of its bucket, so late or replayed
# readings never count twice.
# An empty bucket (its rows pruned, or a range too far out to hold any) writes nothing.
_ROLLUP = """
INSERT OR REPLACE INTO rollups
SELECT ?1, ?2, ?3, COUNT(value), AVG(value), MIN(value), MAX(value)
FROM readings WHERE device_id = ?1 AND metric = ?2 AND ts >= ?3 AND ts < ?4
HAVING COUNT(*) > 0
"""

_INSERT = "INSERT OR REPLACE INTO readings VALUES {rows}"
_UPSERT_LATEST = """
INSERT INTO latest VALUES {rows}
ON CONFLICT (device_id, metric) DO UPDATE SET
    ts = excluded.ts, value = excluded.value, quality = excluded.quality, source = excluded.source
WHERE excluded.ts >= latest.ts
"""
# Rows go in as multi-row statements: sqlite3 releases and retakes the GIL around every
# statement step, so ``executemany`` hands the GIL to the MQTT thread and back once per
# reading. Alone, multi-row statements are no faster; beside the MQTT thread they are
# (bench.e2e --repeat 3, back to back: median ratio 0.53 against 0.47 with executemany).
# Chunks are powers of two up to this size, so the few statement texts stay cached.
_CHUNK_ROWS = 512


@functools.lru_cache(maxsize=32)
def _statement(template: str, rows: int) -> str:
    return template.format(rows=", ".join(["(?, ?, ?, ?, ?, ?)"] * rows))


def _insert_rows(connection: sqlite3.Connection, template: str, rows: list[tuple[Any, ...]]) -> None:
    start, remaining = 0, len(rows)
    while remaining:
        size = min(_CHUNK_ROWS, 1 << (remaining.bit_length() - 1))
        chunk = rows[start:start + size]
        connection.execute(_statement(template, size), [field for row in chunk for field in row])
        start += size
        remaining -= size

_QUALITIES = {quality.value: quality for quality in Quality}


class SqliteStoreConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: str = "sqlite"
    path: Path = Path("data/telemetry.db")
    retention_days: float = Field(7.0, gt=0, description="raw readings are kept this long")
    rollup_interval_s: float = Field(60.0, ge=1, description="bucket of the downsampled series (min, mean, max)")
    rollup_retention_days: float = Field(365.0, gt=0, description="rollups are kept this long")


def _row(reading: Reading) -> tuple[Any, ...]:
    value = reading.value if math.isfinite(reading.value) else None
    return (reading.device_id, reading.metric, reading.timestamp, value, reading.quality.value, reading.source)


def _reading(row: tuple[Any, ...]) -> Reading:
    device_id, metric, ts, value, quality, source = row
    return Reading(device_id, metric, math.nan if value is None else value, ts, _QUALITIES[quality], source)


class SqliteStore:
    """Sink and reader over one SQLite file in WAL mode (readers never block the writer)."""

    name = "sqlite"

    # Old rows are pruned at most this often, not on every batch.
    PRUNE_INTERVAL_S = 300.0
    ROLLUP_EVERY_S = 1.0
    # A bucket counts as ended this long after its end, so readings a little late still land before it is
    # computed (later ones dirty it again: it is computed again).
    ROLLUP_GRACE_S = 2.0
    # Ended buckets are rolled up this many per write, so the minute's turn is spread over the next writes.
    ROLLUP_BUCKETS_PER_WRITE = 500
    # See _connect; each costs memory only as the database grows (a cache fills as pages are used).
    WRITER_CACHE_KIB = 16 * 1024
    CHECKPOINT_PAGES = 4000

    def __init__(self, config: SqliteStoreConfig) -> None:
        self.config = config
        self.path = config.path
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._write_lock = threading.Lock()
        self._writer = self._connect()
        self._writer.executescript(_SCHEMA)
        # -inf, not 0: the monotonic clock starts near 0 on a freshly booted machine.
        self._last_prune = float("-inf")
        # A bucket is rolled up once it has ended, not every second while it fills: recomputing the open
        # buckets each second read every reading some 30 times over (half a 60 s bucket on average), and on
        # a two-core box at 10k readings/s that competed with everything else (alarm-to-dispatch p99 0.7 s
        # instead of 0.2 s in bench.latency). Readers roll up the buckets they read first, open ones included.
        self._dirty_buckets: set[tuple[str, str, float]] = set()
        self._closed_buckets: list[tuple[str, str, float]] = []
        self._last_rollup = float("-inf")
        self.written = 0
        self.batches = 0
        self.errors = 0
        self.last_error: str | None = None
        self.last_error_at: float | None = None

    def _connect(self) -> sqlite3.Connection:
        connection = sqlite3.connect(self.path, check_same_thread=False, timeout=30)
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=NORMAL")
        # A multi-row INSERT OR REPLACE inside a transaction keeps a statement journal (to undo just that
        # statement): on disk by default, a page and its number written per page it touches, which was
        # more than the WAL itself (1.85 GB of writes for 300k readings; 0.68 GB with it in memory).
        connection.execute("PRAGMA temp_store=MEMORY")
        # A batch touches the last leaf page of every series it holds, and more around them when leaves
        # split: with SQLite's 2 MiB default the pages of one commit no longer fit and are read back from
        # the OS at the next (store CPU −30 % at 250 series in 1,860-reading batches with 8 MiB or more).
        connection.execute(f"PRAGMA cache_size=-{self.WRITER_CACHE_KIB}")
        # A page that several commits dirty is copied into the database once per checkpoint: a 16 MB WAL
        # instead of SQLite's 4 MB wrote a quarter less (630 -> 480 MB for 300k readings).
        connection.execute(f"PRAGMA wal_autocheckpoint={self.CHECKPOINT_PAGES}")
        return connection

    def write(self, readings: list[Reading]) -> None:
        rows = [_row(reading) for reading in readings]
        newest: dict[tuple[str, str], tuple[Any, ...]] = {}
        for row in rows:
            key = (row[0], row[1])
            if key not in newest or row[2] >= newest[key][2]:
                newest[key] = row
        with self._write_lock:
            try:
                with self._writer:
                    _insert_rows(self._writer, _INSERT, rows)
                    _insert_rows(self._writer, _UPSERT_LATEST, list(newest.values()))
            except sqlite3.Error as error:
                self._failed("write", error)
                raise
            self.written += len(rows)
            self.batches += 1
            interval = self.config.rollup_interval_s
            self._dirty_buckets.update((row[0], row[1], row[2] // interval * interval) for row in rows)
            # The readings are committed; upkeep failing is counted and shown, never raised as a lost write.
            if time.monotonic() - self._last_rollup > self.ROLLUP_EVERY_S:
                self._collect_closed()
            if self._closed_buckets:
                self._roll_up(self._closed_buckets[-self.ROLLUP_BUCKETS_PER_WRITE:])
                del self._closed_buckets[-self.ROLLUP_BUCKETS_PER_WRITE:]
            if time.monotonic() - self._last_prune > self.PRUNE_INTERVAL_S:
                self._prune()

    def put_series(self, series: dict[tuple[str, str], SeriesInfo]) -> None:
        """Record what each series is (unit, source data type): kept once per series, not per reading."""
        rows = [(device, metric, info.unit, info.data_type, time.time()) for (device, metric), info in series.items()]
        with self._write_lock:
            try:
                with self._writer:
                    self._writer.executemany("INSERT OR REPLACE INTO series VALUES (?, ?, ?, ?, ?)", rows)
            except sqlite3.Error as error:
                self._failed("series", error)
                raise

    def series(self, device_id: str | None = None) -> dict[tuple[str, str], SeriesInfo]:
        query, params = "SELECT device_id, metric, unit, data_type FROM series", ()
        if device_id is not None:
            query, params = query + " WHERE device_id = ?", (device_id,)
        with self._reader() as connection:
            return {(device, metric): SeriesInfo(unit, data_type)
                    for device, metric, unit, data_type in connection.execute(query, params)}

    def _failed(self, what: str, error: Exception) -> None:
        self.errors += 1
        self.last_error = f"{what}: {error}"
        self.last_error_at = time.time()
        log.error("sqlite store %s: %s failed: %s", self.path, what, error)

    def _collect_closed(self) -> None:
        """Move the dirty buckets that have ended (by the wall clock) to the queue of buckets to roll up."""
        self._last_rollup = time.monotonic()
        interval, now = self.config.rollup_interval_s, time.time()
        closed = [bucket for bucket in self._dirty_buckets if bucket[2] + interval <= now - self.ROLLUP_GRACE_S]
        self._dirty_buckets.difference_update(closed)
        self._closed_buckets.extend(closed)

    def _roll_up(self, buckets: list[tuple[str, str, float]]) -> None:
        """Recompute these buckets from their raw readings.

        A bucket that cannot be computed is counted once, not retried (and failed) on every later write.
        """
        interval = self.config.rollup_interval_s
        try:
            with self._writer:
                self._writer.executemany(_ROLLUP, [(device, metric, start, start + interval)
                                                   for device, metric, start in buckets])
        except sqlite3.Error as error:
            self._failed("rollup", error)

    def _roll_up_where(self, wanted: Callable[[tuple[str, str, float]], bool], wait: bool = True) -> None:
        """Bring the buckets a reader is about to read up to date, open ones included. Without ``wait``, only
        if the writer is not busy: the reader then reads what has been rolled up (every bucket that has ended,
        seconds after its end)."""
        if not self._write_lock.acquire(blocking=wait):
            return
        try:
            self._roll_up_pending(wanted)
        finally:
            self._write_lock.release()

    def _roll_up_pending(self, wanted: Callable[[tuple[str, str, float]], bool]) -> None:
        pending = [bucket for bucket in self._dirty_buckets if wanted(bucket)]
        pending += [bucket for bucket in self._closed_buckets if wanted(bucket)]
        if pending:
            self._dirty_buckets.difference_update(pending)
            self._closed_buckets = [bucket for bucket in self._closed_buckets if not wanted(bucket)]
            self._roll_up(pending)

    def flush(self) -> None:
        """Bring the rollups up to date now."""
        self._roll_up_where(lambda bucket: True)

    def _prune(self) -> None:
        now = time.time()
        self._last_prune = time.monotonic()
        try:
            with self._writer:
                self._writer.execute("DELETE FROM readings WHERE ts < ?", (now - self.config.retention_days * 86400,))
                self._writer.execute("DELETE FROM rollups WHERE ts < ?",
                                     (now - self.config.rollup_retention_days * 86400,))
        except sqlite3.Error as error:
            self._failed("prune", error)

    def latest(self, device_id: str) -> list[Reading]:
        with self._reader() as connection:
            rows = connection.execute(
                "SELECT * FROM latest WHERE device_id = ? ORDER BY metric", (device_id,)
            ).fetchall()
        return [_reading(row) for row in rows]

    def last_seen(self) -> dict[str, float]:
        """The newest reading's time of every device that ever sent one (one query for a whole fleet)."""
        with self._reader() as connection:
            return dict(connection.execute("SELECT device_id, MAX(ts) FROM latest GROUP BY device_id").fetchall())

    def monitored_days(self) -> list[tuple[str, int]]:
        """(device, day number since the epoch) of every day a device sent anything, from the
        rollups, which are kept for a year: the exposure failure rates are counted against."""
        self.flush()
        with self._reader() as connection:
            return connection.execute(
                "SELECT DISTINCT device_id, CAST(ts / 86400 AS INTEGER) FROM rollups").fetchall()

    def operating_means(self, device_id: str, since: float, until: float) -> dict[str, float]:
        """Each metric's mean over [since, until) from the rollups (weighted by their counts): the
        operating context a work order records of the hours before its finding.

        It never waits for the writer: a new work order is on the alarm path, and waiting for the ingest's
        write lock made the alarm wait behind telemetry. While the writer is busy, the minute still filling
        is left out of the means."""
        self._roll_up_where(lambda bucket: bucket[0] == device_id and self._overlaps(bucket, since, until),
                            wait=False)
        with self._reader() as connection:
            rows = connection.execute(
                "SELECT metric, SUM(mean * count) / SUM(count) FROM rollups WHERE device_id = ? AND ts >= ? "
                "AND ts < ? AND count > 0 GROUP BY metric", (device_id, since, until)).fetchall()
        return {metric: mean for metric, mean in rows if mean is not None}

    def history(
        self, device_id: str, metric: str | None, since: float, until: float, limit: int
    ) -> list[Reading]:
        query = "SELECT * FROM readings WHERE device_id = ? AND ts >= ? AND ts <= ?"
        params: list[Any] = [device_id, since, until]
        if metric is not None:
            query += " AND metric = ?"
            params.append(metric)
        # Newest first so a limit keeps the most recent window, then back to time order.
        query += " ORDER BY ts DESC LIMIT ?"
        params.append(limit)
        with self._reader() as connection:
            rows = connection.execute(query, params).fetchall()
        return [_reading(row) for row in reversed(rows)]

    def rollups(self, device_id: str, metric: str, since: float, until: float) -> list[dict[str, Any]]:
        """The downsampled series: one bucket of ``rollup_interval_s`` per row, oldest first."""
        self._roll_up_where(lambda bucket: bucket[:2] == (device_id, metric) and self._overlaps(bucket, since, until))
        with self._reader() as connection:
            rows = connection.execute(
                "SELECT ts, count, mean, min, max FROM rollups WHERE device_id = ? AND metric = ? "
                "AND ts >= ? AND ts <= ? ORDER BY ts", (device_id, metric, since, until),
            ).fetchall()
        return [{"timestamp": ts, "count": count, "mean": mean, "min": low, "max": high}
                for ts, count, mean, low, high in rows]

    def _overlaps(self, bucket: tuple[str, str, float], since: float, until: float) -> bool:
        return bucket[2] <= until and bucket[2] + self.config.rollup_interval_s > since

    def _reader(self) -> closing[sqlite3.Connection]:
        return closing(sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=30))

    def diagnostics(self) -> dict[str, Any]:
        return {
            "type": self.name,
            "path": str(self.path),
            "readings_written": self.written,
            "batches": self.batches,
            "errors": self.errors,
            "last_error": self.last_error,
            "last_error_at": self.last_error_at,
            "retention_days": self.config.retention_days,
            "rollup_interval_s": self.config.rollup_interval_s,
            "rollup_retention_days": self.config.rollup_retention_days,
        }

    def close(self) -> None:
        with self._write_lock:
            self._roll_up_pending(lambda bucket: True)
            self._writer.close()

