"""The pipeline's bounded queues and the embedded store."""

from __future__ import annotations

import asyncio
import math
import sqlite3
import threading
import time
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from edge.sqlite_store import SqliteStore, SqliteStoreConfig
from gateway.core import Alarm, Anomaly, PartlyScored, Quality, Reading, Severity
from gateway.pipeline import Pipeline


@dataclass
class FunctionSink:
    name: str
    write: Callable[[list[Reading]], None]


T0 = time.time() - 3600


def batch(start: int, size: int) -> list[Reading]:
    return [Reading("d", "m", float(i), T0 + i) for i in range(start, start + size)]


async def test_a_slow_sink_makes_producers_wait_and_loses_nothing() -> None:
    release = threading.Event()
    written: list[int] = []

    def slow_write(readings: list[Reading]) -> None:
        release.wait(10)
        written.extend(int(r.value) for r in readings)

    pipeline = Pipeline(sinks=[FunctionSink("slow", slow_write)], detect=lambda readings: [],
                        handle_finding=lambda f: None,
                        queue_batches=2, max_batch_readings=10)
    pipeline.start()
    producer = asyncio.gather(*[pipeline.put(batch(i * 5, 5)) for i in range(40)])
    await asyncio.sleep(0.5)
    # The sink holds one batch; each queue holds at most 2: the producer is blocked, memory is bounded.
    assert not producer.done()
    depth = pipeline.diagnostics()["queue_depth"]
    assert depth["ingest"] <= 2 and depth["sink"] <= 2
    release.set()
    await asyncio.wait_for(producer, 10)
    await pipeline.stop()
    assert sorted(written) == list(range(200))
    assert pipeline.counts["readings_stored"] == 200 and pipeline.counts["readings_scored"] == 200


async def test_findings_reach_ticketing_and_a_failing_stage_does_not_stop_the_rest() -> None:
    handled: list[object] = []

    def flaky_write(readings: list[Reading]) -> None:
        raise OSError("disk full")

    def detect(readings: list[Reading]) -> list:
        if readings[0].value == 0:
            raise ValueError("model bug")
        return []

    kept: list[Reading] = []
    sinks = [FunctionSink("broken", flaky_write), FunctionSink("working", kept.extend)]
    pipeline = Pipeline(sinks=sinks, detect=detect, handle_finding=handled.append, queue_batches=4)
    pipeline.start()
    await pipeline.put(batch(0, 3))
    await pipeline.put_alarm(Alarm("d", 1.0, "OHE", Severity.HIGH, "hot"))
    await pipeline.put(batch(3, 3))
    await pipeline.stop()
    assert [type(f).__name__ for f in handled] == ["Alarm"]
    assert pipeline.errors["sink:broken"] >= 1 and pipeline.errors["detectors"] == 1
    assert pipeline.counts["readings_not_stored"] == 6
    # The two batches may be merged into one for the detectors: at least the failed one is counted lost.
    assert pipeline.counts["readings_not_scored"] >= 3
    assert pipeline.counts["readings_scored"] + pipeline.counts["readings_not_scored"] == 6
    assert len(kept) == 6  # the failing sink did not keep the batch from the working one


async def test_storing_and_scoring_give_way_while_a_finding_is_ticketed_for_a_bounded_time() -> None:
    """An alarm's ticketing has a latency target, telemetry a queue: a batch arriving while a finding is in
    ticketing is stored and scored after it, and never waits longer than the bound, nor is lost."""
    in_ticketing, release = threading.Event(), threading.Event()
    moments: dict[str, list[float]] = {"stored": [], "scored": [], "ticketed": []}

    def ticket(finding: object) -> None:
        in_ticketing.set()
        release.wait(10)
        moments["ticketed"].append(time.monotonic())

    def detect(readings: list[Reading]) -> list:
        moments["scored"].append(time.monotonic())
        return []

    pipeline = Pipeline(sinks=[FunctionSink("store", lambda readings: moments["stored"].append(time.monotonic()))],
                        detect=detect, handle_finding=ticket, queue_batches=4)
    pipeline.precedence.max_wait_s = 5.0
    pipeline.start()
    await pipeline.put_alarm(Alarm("d", 1.0, "OHE", Severity.HIGH, "hot"))
    assert await asyncio.to_thread(in_ticketing.wait, 5)
    await pipeline.put(batch(0, 5))
    await asyncio.sleep(0.5)
    assert moments["stored"] == moments["scored"] == []  # waiting at the batch boundary
    release.set()
    await pipeline.put(batch(5, 5))
    await pipeline.settled()
    assert moments["stored"][0] >= moments["ticketed"][0] and moments["scored"][0] >= moments["ticketed"][0]
    assert pipeline.precedence.gave_way == 2  # one batch each for the store and the detectors

    # Urgent work that never ends holds telemetry up by the bound only.
    in_ticketing.clear()
    release.clear()
    pipeline.precedence.max_wait_s = 0.3
    await pipeline.put_alarm(Alarm("d", 2.0, "OHE", Severity.HIGH, "hot"))
    assert await asyncio.to_thread(in_ticketing.wait, 5)
    began = time.monotonic()
    await pipeline.put(batch(10, 5))
    await pipeline.settled()
    assert 0.25 <= time.monotonic() - began < 3
    release.set()
    await pipeline.stop()
    assert pipeline.counts["readings_stored"] == pipeline.counts["readings_scored"] == 15
    assert pipeline.diagnostics()["precedence"]["gave_way"] == 4


async def test_a_batch_partly_scored_counts_what_was_lost_and_keeps_what_was_found() -> None:
    handled: list[object] = []
    found = Anomaly("d", T0, "rules", 1.0, Severity.HIGH, "OHE", ["m"], "hot")

    def detect(readings: list[Reading]) -> list:
        raise PartlyScored([found], unscored=2)  # as when one of several worker processes died

    pipeline = Pipeline(sinks=[], detect=detect, handle_finding=handled.append, queue_batches=4)
    pipeline.start()
    await pipeline.put(batch(0, 5))
    await pipeline.stop()
    assert handled == [found]
    assert pipeline.counts["readings_scored"] == 3 and pipeline.counts["readings_not_scored"] == 2
    assert pipeline.errors["detectors"] == 1


def test_store_writes_large_and_odd_sized_batches_whole(tmp_path: Path) -> None:
    """Batches go in as multi-row statements in power-of-two chunks: every size must arrive whole, a
    point written twice in one batch keeps its last value, and the latest value is the newest."""
    store = SqliteStore(SqliteStoreConfig(path=tmp_path / "t.db"))
    t0 = time.time() - 3600
    written = 0
    for size in (1, 2, 3, 511, 512, 513, 1300):
        readings = [Reading(f"p{i % 3}", "vib", float(i), t0 + written + i // 3) for i in range(size)]
        readings.append(Reading("p0", "vib", -7.0, t0 + written))  # the same point again, later in the batch
        store.write(readings)
        written += size
    for device in ("p0", "p1", "p2"):
        history = store.history(device, "vib", t0 - 1, t0 + written, 10_000)
        expected = {}
        start = 0
        for size in (1, 2, 3, 511, 512, 513, 1300):
            for i in range(size):
                if f"p{i % 3}" == device:
                    expected[t0 + start + i // 3] = float(i)
            if device == "p0":
                expected[t0 + start] = -7.0
            start += size
        assert {r.timestamp: r.value for r in history} == expected
        newest = max(expected)
        assert {r.metric: (r.timestamp, r.value) for r in store.latest(device)} == {"vib": (newest, expected[newest])}
    store.close()


def _bytes_written() -> int:
    fields = dict(line.split(": ") for line in Path("/proc/self/io").read_text().splitlines())
    return int(fields["wchar"])


def test_store_writes_little_more_than_its_pages(tmp_path: Path) -> None:
    """Write amplification, counted in bytes this process hands the kernel: 250 series in 1,860-reading
    batches (a plant's backlog as the pipeline merges it). Multi-row INSERT OR REPLACE statements kept a
    statement journal on disk, a page and its number per page touched: 3.8 KB per reading here, now 0.9."""
    store = SqliteStore(SqliteStoreConfig(path=tmp_path / "t.db"))
    series = [(f"dev-{d:02d}", metric) for d in range(50) for metric in ("temp", "vib", "flow", "pressure", "current")]
    t0 = time.time() - 3600
    readings = [Reading(device, metric, 1.5 + tick, t0 + tick, source="bench")
                for tick in range(240) for device, metric in series]
    before = _bytes_written()
    for start in range(0, len(readings), 1860):
        store.write(readings[start:start + 1860])
    per_reading = (_bytes_written() - before) / len(readings)
    store.close()
    assert per_reading < 2500, f"{per_reading:.0f} bytes written per reading"


def test_store_latest_history_and_idempotent_replay(tmp_path: Path) -> None:
    store = SqliteStore(SqliteStoreConfig(path=tmp_path / "t.db"))
    t0 = time.time() - 100
    readings = [Reading("p1", "vib", float(i), t0 + i) for i in range(10)]
    readings.append(Reading("p1", "temp", math.nan, t0 + 5, Quality.BAD, "mqtt"))
    store.write(readings)
    store.write(readings[:5])  # a replay overwrites, never duplicates
    history = store.history("p1", "vib", t0, t0 + 9, 100)
    assert [r.value for r in history] == [float(i) for i in range(10)]
    assert [r.value for r in store.history("p1", "vib", 0, t0 + 100, 3)] == [7.0, 8.0, 9.0]
    latest = {r.metric: r for r in store.latest("p1")}
    assert latest["vib"].value == 9.0 and latest["vib"].timestamp == t0 + 9
    assert latest["temp"].quality is Quality.BAD and math.isnan(latest["temp"].value)
    # An older reading arriving late does not replace the latest value.
    store.write([Reading("p1", "vib", -1.0, t0 - 50)])
    assert {r.metric: r.value for r in store.latest("p1")}["vib"] == 9.0
    store.close()


def test_store_drops_readings_past_retention(tmp_path: Path) -> None:
    store = SqliteStore(SqliteStoreConfig(path=tmp_path / "t.db", retention_days=1))
    now = time.time()
    store.write([Reading("p1", "vib", 1.0, now - 2 * 86400), Reading("p1", "vib", 2.0, now - 60)])
    assert [r.value for r in store.history("p1", None, 0, now, 10)] == [2.0]
    store.close()


def test_rollups_are_exact_and_late_or_replayed_readings_count_once(tmp_path: Path) -> None:
    store = SqliteStore(SqliteStoreConfig(path=tmp_path / "t.db", rollup_interval_s=60))
    start = (time.time() - 3600) // 60 * 60
    day = [Reading("p1", "vib", float(i % 60), start + i) for i in range(180)]  # 3 minutes at 1 Hz
    store.write(day[:100])
    store.write(day[100:])
    store.write(day[30:40])  # a replay
    store.write([Reading("p1", "vib", 100.0, start + 59.5)])  # late, into the first bucket
    store.flush()
    buckets = store.rollups("p1", "vib", start, start + 3600)
    assert [b["timestamp"] for b in buckets] == [start, start + 60, start + 120]
    assert [b["count"] for b in buckets] == [61, 60, 60]
    assert buckets[0]["max"] == 100.0 and buckets[1]["min"] == 0.0 and buckets[1]["max"] == 59.0
    assert buckets[1]["mean"] == sum(range(60)) / 60
    store.close()


def test_ended_buckets_roll_up_on_write_and_open_ones_when_read(tmp_path: Path) -> None:
    """Writes roll up the buckets that have ended, not the one still filling (that would read it again and
    again); a reader sees every bucket up to date all the same."""
    store = SqliteStore(SqliteStoreConfig(path=tmp_path / "t.db", rollup_interval_s=60))
    store.ROLLUP_BUCKETS_PER_WRITE = 2  # the ended buckets go over several writes
    now = time.time()
    ended = now // 60 * 60 - 600
    current = now // 60 * 60 + 60  # a device clock a little ahead: this bucket has not ended

    def stored() -> dict[tuple[str, float], int]:
        with closing(sqlite3.connect(tmp_path / "t.db")) as connection:
            return {(device, ts): count for device, ts, count in
                    connection.execute("SELECT device_id, ts, count FROM rollups")}

    store.write([Reading(f"p{n}", "vib", float(n), ended + n) for n in range(5)])
    assert len(stored()) == 2
    store.write([Reading("p0", "vib", 7.0, current), Reading("p0", "vib", 9.0, current + 1)])
    store.write([Reading("p0", "vib", 8.0, current + 2)])
    assert stored() == {(f"p{n}", ended): 1 for n in range(5)}, "ended buckets in, two per write, the open one not"
    assert store.rollups("p0", "vib", current, current) == [
        {"timestamp": current, "count": 3, "mean": 8.0, "min": 7.0, "max": 9.0}]
    assert store.operating_means("p0", current, current + 60) == {"vib": 8.0}
    store.write([Reading("p0", "vib", 20.0, current + 3)])
    assert store.rollups("p0", "vib", current, current)[0]["count"] == 4, "read again, up to date again"
    assert stored()[("p0", current)] == 4
    store.close()


def test_the_operating_context_never_waits_for_the_writer(tmp_path: Path) -> None:
    """A new work order reads the operating context on the alarm path: while the ingest writer holds the
    store, it reads what is rolled up (the ended buckets) instead of waiting."""
    store = SqliteStore(SqliteStoreConfig(path=tmp_path / "t.db", rollup_interval_s=60))
    ended = time.time() // 60 * 60 - 600
    current = time.time() // 60 * 60 + 60  # not ended
    store.write([Reading("p0", "vib", 1.0, ended), Reading("p0", "vib", 3.0, ended + 1)])
    store.write([Reading("p0", "vib", 100.0, current)])
    with store._write_lock:  # the writer, busy
        began = time.monotonic()
        assert store.operating_means("p0", ended, current + 60) == {"vib": 2.0}, "the open minute left out"
        assert time.monotonic() - began < 1
    assert store.operating_means("p0", ended, current + 60) == {"vib": 104.0 / 3}, "the writer free: all of it"
    store.close()


def test_operating_means_weigh_each_bucket_by_its_readings(tmp_path: Path) -> None:
    """The mean over a window is the mean of its readings, not of its bucket means."""
    store = SqliteStore(SqliteStoreConfig(path=tmp_path / "t.db", rollup_interval_s=60))
    start = (time.time() - 7200) // 60 * 60
    readings = [Reading("p1", "temp", 10.0, start + i) for i in range(60)]  # one full bucket at 10
    readings += [Reading("p1", "temp", 40.0, start + 60 + i * 20) for i in range(3)]  # three readings at 40
    readings += [Reading("p1", "load", 0.5, start + i) for i in range(0, 120, 10)]
    readings += [Reading("p1", "temp", 99.0, start + 600), Reading("p2", "temp", 77.0, start)]  # outside, other
    store.write(readings)
    store.flush()
    means = store.operating_means("p1", start, start + 120)
    assert means == {"temp": (60 * 10.0 + 3 * 40.0) / 63, "load": 0.5}
    assert store.operating_means("p1", start + 3600, start + 7200) == {}
    store.close()
