"""InfluxDB write throughput: through the durable buffer vs raw batched line-protocol writes.

Both paths encode the same readings with the same line-protocol code and post
batches of the same size to the same InfluxDB 1.6 (started here on loopback);
the buffered path also commits every batch to the SQLite buffer and forwards
from it. Then recovery after an outage: InfluxDB stopped while the buffer
fills with the pipeline's small batches and the forwarder's backoff sits at
its cap, InfluxDB started, the time to the first write (a ping probe notices
the server, not the end of the backoff) and the drain rate, replaying one
stored batch per request (the baseline) and merged to full-size requests.

    python -m bench.influx --readings 300000
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import httpx

from edge.buffer import DurableBuffer
from edge.forwarder import BufferedSink, LineWriter, wait_until_drained
from edge.influx import InfluxSinkConfig, make_writer
from edge.line_protocol import reading_line, series_prefix
from gateway.core import Quality, Reading
from tests.servers import InfluxD, new_influxd

TAGS = {f"dev-{i:03d}": {"site": "bench", "model": "M", "type": "pump"} for i in range(50)}
BATCH = 5000
OUTAGE_BATCH = 200  # what the pipeline appends per batch at a few thousand readings/s


def make_readings(count: int, t0: float) -> list[Reading]:
    devices = list(TAGS)
    return [Reading(devices[i % 50], f"m{i % 5}", float(i), t0 + i * 1e-4, Quality.GOOD, "bench")
            for i in range(count)]


def raw_writes(server: InfluxD, readings: list[Reading]) -> float:
    """Seconds to encode and post every batch directly."""
    prefixes: dict[tuple[str, str], str] = {}

    def line(r: Reading) -> str:  # the tags of a series made once, as the sink does
        prefix = prefixes.get((r.device_id, r.metric))
        if prefix is None:
            prefix = prefixes[(r.device_id, r.metric)] = series_prefix(r.device_id, r.metric, r.source,
                                                                        TAGS[r.device_id], None)
        return reading_line(prefix, r)

    with httpx.Client(base_url=server.url, timeout=60) as http:
        started = time.perf_counter()
        for start in range(0, len(readings), BATCH):
            body = "\n".join(line(r) for r in readings[start:start + BATCH])
            response = http.post("/write", params={"db": "raw", "precision": "ns"}, content=body.encode())
            response.raise_for_status()
        return time.perf_counter() - started


def buffered_sink(server: InfluxD, database: str, path: Path) -> BufferedSink:
    config = InfluxSinkConfig(type="influxdb", api="v1", url=server.url, database=database, gzip=False)
    buffer = DurableBuffer(path, max_bytes=2**31, max_age_s=86400, when_full="block")
    return BufferedSink("bench", make_writer(config), buffer, TAGS, batch_readings=BATCH,
                        retry_min_s=0.1, retry_max_s=0.5)


def buffered_writes(server: InfluxD, readings: list[Reading], path: Path) -> float:
    """Seconds from the first write until InfluxDB acknowledged everything."""
    sink = buffered_sink(server, "buffered", path)
    started = time.perf_counter()
    for start in range(0, len(readings), BATCH):
        sink.write(readings[start:start + BATCH])
    assert wait_until_drained(sink, timeout=600)
    elapsed = time.perf_counter() - started
    sink.close()
    return elapsed


class CountingWriter:
    """The real writer; records the size of each successful write request and when the first one was."""

    def __init__(self, writer: LineWriter) -> None:
        self.writer = writer
        self.requests: list[int] = []
        self.first_success_at: float | None = None

    def write_lines(self, lines: list[str]) -> None:
        self.writer.write_lines(lines)
        self.requests.append(len(lines))
        if self.first_success_at is None:
            self.first_success_at = time.perf_counter()

    def ping(self) -> bool:
        return self.writer.ping()

    def close(self) -> None:
        self.writer.close()


def drain_after_outage(server: InfluxD, database: str, readings: list[Reading], path: Path,
                       request_lines: int) -> tuple[float, float, int]:
    """InfluxDB down while the pipeline appends its small batches (OUTAGE_BATCH readings each) and the
    forwarder's backoff sits at its 30 s cap; then InfluxDB is back. Returns seconds until the first
    write, seconds until the buffer is empty, and write requests, with stored batches merged up to
    ``request_lines`` lines per request."""
    server.stop()
    config = InfluxSinkConfig(type="influxdb", api="v1", url=server.url, database=database, gzip=False)
    writer = CountingWriter(make_writer(config))
    buffer = DurableBuffer(path, max_bytes=2**31, max_age_s=86400, when_full="block")
    sink = BufferedSink("bench", writer, buffer, TAGS, batch_readings=request_lines,
                        retry_min_s=30.0, retry_max_s=30.0, probe_interval_s=1.0)
    for start in range(0, len(readings), OUTAGE_BATCH):
        sink.write(readings[start:start + OUTAGE_BATCH])
    while sink.connected is not False:
        time.sleep(0.05)
    server.start()
    started = time.perf_counter()
    assert wait_until_drained(sink, timeout=900)
    elapsed = time.perf_counter() - started
    sink.close()
    assert writer.first_success_at is not None
    return writer.first_success_at - started, elapsed, len(writer.requests)


def count(server: InfluxD, database: str) -> int:
    return int(server.query(database, 'SELECT COUNT("value") FROM "telemetry"')[0][1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--readings", type=int, default=300_000)
    args = parser.parse_args()
    readings = make_readings(args.readings, time.time() - 7200)
    with tempfile.TemporaryDirectory(prefix="pmgw-bench-influx-") as tmp:
        server = new_influxd(Path(tmp) / "influxd")
        try:
            databases = ("raw", "buffered", "outage_single", "outage_merged")
            for database in databases:
                server.create_database(database)
            raw_s = raw_writes(server, readings)
            buffered_s = buffered_writes(server, readings, Path(tmp) / "buffer.db")
            single = drain_after_outage(server, "outage_single", readings, Path(tmp) / "single.db", OUTAGE_BATCH)
            merged = drain_after_outage(server, "outage_merged", readings, Path(tmp) / "merged.db", BATCH)
            counts = {database: count(server, database) for database in databases}
        finally:
            server.stop()
    n = len(readings)
    assert all(value == n for value in counts.values()), counts
    print(f"{'path':<44}{'readings':>10}{'seconds':>10}{'readings/s':>14}")
    print(f"{'raw batched line protocol (baseline)':<44}{n:>10}{raw_s:>10.2f}{n / raw_s:>14.0f}")
    print(f"{'through the durable buffer':<44}{n:>10}{buffered_s:>10.2f}{n / buffered_s:>14.0f}")
    print(f"ratio buffered / raw: {raw_s / buffered_s:.2f}")
    print()
    print(f"after an outage (backoff at its 30 s cap, {OUTAGE_BATCH}-reading batches stored):")
    print(f"{'replay':<44}{'first write s':>14}{'drain s':>10}{'requests':>10}{'readings/s':>14}")
    for label, (first_s, drain_s, requests) in (
        ("one stored batch per request (baseline)", single), (f"stored batches merged to {BATCH} lines", merged),
    ):
        print(f"{label:<44}{first_s:>14.2f}{drain_s:>10.2f}{requests:>10}{n / drain_s:>14.0f}")
    print(f"ratio merged / one batch per request: {single[1] / merged[1]:.2f}")


if __name__ == "__main__":
    main()
