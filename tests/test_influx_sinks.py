"""InfluxDB sinks through the durable buffer, against real servers: InfluxDB 1.6 and VictoriaMetrics."""

from __future__ import annotations

import math
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest

from edge.buffer import DurableBuffer
from edge.forwarder import BufferedSink, wait_until_drained
from edge.influx import InfluxQLReader, InfluxSinkConfig, make_writer
from gateway.core import Quality, Reading
from bench.influx import CountingWriter
from tests.conftest import wait_until
from tests.servers import InfluxD, VictoriaMetrics, new_influxd, new_victoria_metrics

DB = "plant"
TAGS = {"pump-01": {"site": "north", "model": "Etanorm 80-250", "type": "pump"}}


@pytest.fixture
def influxd(tmp_path: Path) -> Iterator[InfluxD]:
    server = new_influxd(tmp_path / "influxd")
    server.create_database(DB)
    yield server
    server.stop()


@pytest.fixture
def victoria(tmp_path: Path) -> Iterator[VictoriaMetrics]:
    server = new_victoria_metrics(tmp_path / "vm")
    yield server
    server.stop()


def v1_config(server: InfluxD, **buffer: object) -> InfluxSinkConfig:
    return InfluxSinkConfig.model_validate({
        "type": "influxdb", "api": "v1", "url": server.url, "database": DB,
        "buffer": {"retry_min_s": 0.2, "retry_max_s": 2.0} | buffer,
    })


def buffered(config: InfluxSinkConfig, path: Path, max_bytes: int = 64 * 2**20, when_full: str = "block") -> BufferedSink:
    buffer = DurableBuffer(path, max_bytes=max_bytes, max_age_s=3600, when_full=when_full)  # type: ignore[arg-type]
    return BufferedSink(config.name, make_writer(config), buffer, TAGS, batch_readings=config.buffer.batch_readings,
                        retry_min_s=config.buffer.retry_min_s, retry_max_s=config.buffer.retry_max_s)


def readings(start: float, count: int, metric: str = "vibration", device: str = "pump-01") -> list[Reading]:
    return [Reading(device, metric, i * 0.5, start + i * 0.001, Quality.GOOD, "mqtt") for i in range(count)]


def count_points(server: InfluxD) -> int:
    rows = server.query(DB, 'SELECT COUNT("value") FROM "telemetry"')
    return int(rows[0][1]) if rows else 0


def test_v1_round_trip_with_schema_and_influxql_history(influxd: InfluxD, tmp_path: Path) -> None:
    config = v1_config(influxd)
    sink = buffered(config, tmp_path / "buffer.db")
    t0 = time.time() - 60
    sink.write(readings(t0, 100) + [Reading("pump-01", "flow", math.nan, t0, Quality.BAD, "mqtt")])
    assert wait_until_drained(sink, timeout=30)
    sink.close()

    tags = influxd.query(DB, 'SHOW TAG KEYS FROM "telemetry"')
    assert sorted(row[0] for row in tags) == ["device", "metric", "model", "site", "source", "type"]
    reader = InfluxQLReader(config)
    history = reader.history("pump-01", "vibration", t0 - 1, t0 + 1, 1000)
    assert [r.value for r in history] == [i * 0.5 for i in range(100)]
    assert [round(r.timestamp, 3) for r in history] == [round(t0 + i * 0.001, 3) for i in range(100)]
    [bad] = reader.history("pump-01", "flow", t0 - 1, t0 + 1, 10)
    assert bad.quality is Quality.BAD and math.isnan(bad.value)
    assert [r.value for r in reader.history("pump-01", None, t0 - 1, t0 + 1, 3)] == [48.5, 49.0, 49.5]
    reader.close()


def test_v2_write_api_into_victoria_metrics(victoria: VictoriaMetrics, tmp_path: Path) -> None:
    config = InfluxSinkConfig.model_validate({
        "type": "influxdb", "api": "v2", "url": victoria.url, "org": "plant", "bucket": "telemetry",
        "token": "unused", "buffer": {"retry_min_s": 0.2},
    })
    sink = buffered(config, tmp_path / "buffer.db")
    t0 = round(time.time() - 60)
    sink.write(readings(t0, 50))
    assert wait_until_drained(sink, timeout=30)
    sink.close()

    def exported() -> list[dict]:
        return victoria.export('{__name__="telemetry_value"}')

    [series] = wait_until(exported, timeout=30, what="VictoriaMetrics to show the series")
    assert series["metric"] | {} == {"__name__": "telemetry_value", "device": "pump-01", "metric": "vibration",
                                     "site": "north", "model": "Etanorm 80-250", "type": "pump", "source": "mqtt"}
    assert series["values"] == [i * 0.5 for i in range(50)]
    assert series["timestamps"] == [t0 * 1000 + i for i in range(50)]


def test_outage_loses_nothing_and_the_buffer_drains(influxd: InfluxD, tmp_path: Path) -> None:
    sink = buffered(v1_config(influxd), tmp_path / "buffer.db")
    t0 = time.time() - 3600
    sent = 0
    outage: dict[str, float] = {}

    def stream(seconds: float, rate: int = 6000) -> None:
        nonlocal sent
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            batch = [Reading("pump-01", f"m{k % 4}", float(sent + k), t0 + (sent + k) * 0.0001, Quality.GOOD, "mqtt")
                     for k in range(rate // 10)]
            sink.write(batch)
            sent += len(batch)
            time.sleep(0.1)

    stream(5)
    influxd.stop()
    outage["stopped"] = time.monotonic()
    stream(32)  # the pipeline keeps writing into the buffer while InfluxDB is away
    assert sink.buffer.pending_readings > 0 and sink.connected is False
    influxd.start()
    stream(5)
    assert wait_until_drained(sink, timeout=120), sink.diagnostics()
    sink.close()
    assert sent >= 5000 * 42
    assert count_points(influxd) == sent  # every reading, once per series and timestamp
    assert influxd.query(DB, 'SELECT COUNT("value") FROM "telemetry" GROUP BY "metric"')


def test_block_policy_makes_the_producer_wait_for_space(influxd: InfluxD, tmp_path: Path) -> None:
    influxd.stop()
    sink = buffered(v1_config(influxd), tmp_path / "buffer.db", max_bytes=20_000, when_full="block")
    t0 = time.time() - 600
    done = threading.Event()
    total = 40 * 500

    def produce() -> None:
        for i in range(40):
            sink.write(readings(t0 + i, 500, metric=f"m{i}"))
        done.set()

    producer = threading.Thread(target=produce, daemon=True)
    producer.start()
    time.sleep(3)
    assert not done.is_set()  # blocked: InfluxDB is down and the buffer is full
    assert sink.buffer.pending_bytes <= 20_000 + 8000
    assert sink.buffer.counters().get("blocked_appends", 0) > 0
    influxd.start()
    assert done.wait(60)
    assert wait_until_drained(sink, timeout=60)
    assert "dropped_readings" not in sink.buffer.counters()
    sink.close()
    assert count_points(influxd) == total


def test_drop_oldest_policy_counts_the_loss_and_keeps_the_newest(influxd: InfluxD, tmp_path: Path) -> None:
    influxd.stop()
    sink = buffered(v1_config(influxd), tmp_path / "buffer.db", max_bytes=20_000, when_full="drop_oldest")
    t0 = time.time() - 600
    for i in range(40):
        sink.write(readings(t0 + i * 10, 500, metric=f"m{i:02d}"))
    diagnostics = sink.diagnostics()["buffer"]
    assert diagnostics["dropped_readings"] > 0
    assert diagnostics["pending_bytes"] <= 20_000 + 8000
    kept = diagnostics["pending_readings"]
    assert kept + diagnostics["dropped_readings"] == 40 * 500
    influxd.start()
    assert wait_until_drained(sink, timeout=60)
    sink.close()
    assert count_points(influxd) == kept
    metrics = {row[1] for row in influxd.query(DB, 'SHOW TAG VALUES FROM "telemetry" WITH KEY = "metric"')}
    assert "m39" in metrics and "m00" not in metrics  # the oldest went first


def test_a_poison_line_is_dead_lettered_and_the_rest_flows(influxd: InfluxD, tmp_path: Path) -> None:
    sink = buffered(v1_config(influxd), tmp_path / "buffer.db")
    t0 = time.time() - 60
    sink.write(readings(t0, 10))
    assert wait_until_drained(sink, timeout=30)
    # "value" is a float field; a string value is a type conflict InfluxDB refuses.
    poison = 'telemetry,device=pump-01,metric=vibration value="broken" ' + str(int((t0 + 5) * 1e9) + 7)
    good = [f"telemetry,device=pump-01,metric=vibration value={i}.0 {int((t0 + 10) * 1e9) + i}" for i in range(20)]
    sink.buffer.append(good[:10] + [poison] + good[10:], t0)
    sink.write(readings(t0 + 20, 10))
    assert wait_until_drained(sink, timeout=30)
    [letter] = sink.buffer.dead_letters()
    assert sink.diagnostics()["buffer"]["dead_letters"] == 1
    sink.close()
    assert letter["line"] == poison
    assert "field type conflict" in letter["reason"]
    assert count_points(influxd) == 10 + 20 + 10


CHILD = """
import sys, time
from pathlib import Path
from edge.buffer import DurableBuffer
buffer = DurableBuffer(Path(sys.argv[1]), max_bytes=10**9, max_age_s=3600, when_full="block")
t0 = float(sys.argv[2])
for i in range(100000):
    lines = [f"telemetry,device=pump-01,metric=m value={i * 100 + k} {int((t0 + i) * 1e9) + k}" for k in range(100)]
    buffer.append(lines, t0 + i)
    print(i, flush=True)  # the batch is committed: accepted
"""


def test_kill_9_mid_stream_loses_no_accepted_reading(influxd: InfluxD, tmp_path: Path) -> None:
    path = tmp_path / "buffer.db"
    t0 = time.time() - 7200
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(path), str(t0)], stdout=subprocess.PIPE, text=True)
    accepted = -1
    assert child.stdout is not None
    for line in child.stdout:
        accepted = int(line)
        if accepted >= 300:
            break
    child.kill()  # SIGKILL: no cleanup, no flush
    child.wait()
    sink = buffered(v1_config(influxd), path)
    assert wait_until_drained(sink, timeout=60)
    sink.close()
    # Everything the child reported as accepted is there (it may have committed one more).
    assert count_points(influxd) >= (accepted + 1) * 100
    assert count_points(influxd) % 100 == 0


def test_gateway_writes_telemetry_anomalies_and_events_to_influxdb_and_reads_history_back(
    influxd: InfluxD, mosquitto, tmp_path: Path, start_gateway
) -> None:
    import orjson

    from tests.conftest import gateway_document
    from tests.test_mqtt_ingest import publish, publisher

    sink = {"type": "influxdb", "name": "plant-influx", "api": "v1", "url": influxd.url, "database": DB,
            "buffer": {"path": str(tmp_path / "influx-buffer.db"), "retry_min_s": 0.2}}
    document = gateway_document(mosquitto.port, tmp_path)
    document["storage"]["sinks"] = [sink]
    document["api"]["history_source"] = "plant-influx"
    # A low limit so the one reading below opens a work order (an anomaly and its events).
    document["detectors"]["rules"] = [{"device_type": "pump", "metric": "vibration", "high": 7.1,
                                       "on_delay": 1, "failure_mode": "VIB"}]
    document["sources"][0]["payload"]["metrics"] = {"vibration": {"unit": "mm/s"}}
    gw = start_gateway(document)
    client = publisher(mosquitto)
    now = time.time()
    for i in range(3):
        publish(client, "plant/north/pump-01/telemetry",
                orjson.dumps({"ts": now - 3 + i, "metrics": {"vibration": 2.0 + 3 * i, "flow": 80.0}}))
    client.loop_stop()

    history = wait_until(lambda: gw.get("/devices/pump-01/readings", metric="vibration", since=now - 10)["readings"],
                         timeout=30, what="history served from InfluxDB")
    assert [r["value"] for r in history] == [2.0, 5.0, 8.0]
    # The series' unit is a tag by convention (none where unknown: flow has no configured unit).
    assert influxd.query(DB, 'SHOW TAG VALUES FROM "telemetry" WITH KEY = "unit"') == [["unit", "mm/s"]]
    wait_until(lambda: influxd.query(DB, 'SELECT * FROM "work_order_events"'), timeout=30, what="events in InfluxDB")
    [anomaly] = influxd.query(DB, 'SELECT "failure_mode", "score", "site" FROM "anomalies"')
    assert anomaly[1:] == ["VIB", 8.0, "north"]
    events = influxd.query(DB, 'SELECT "code", "device", "kind" FROM "work_order_events"')
    assert {row[3] for row in events} >= {"created", "dispatched"}
    assert {(row[1][:3], row[2]) for row in events} == {("WO-", "pump-01")}
    sinks = gw.get("/health")["sinks"]
    assert [s["type"] for s in sinks] == ["sqlite", "influxdb"]
    assert sinks[1]["reachable"] is True and sinks[1]["buffer"]["pending_readings"] == 0
    metrics = gw.http.get("/metrics").text
    assert 'pmgw_buffer_pending_readings{sink="plant-influx"} 0.0' in metrics
    assert 'pmgw_sink_reachable{sink="plant-influx"} 1.0' in metrics
    assert 'pmgw_connector_connected{connector="test-broker"} 1.0' in metrics
    assert "pmgw_work_orders_created_total 1.0" in metrics
    assert 'pmgw_sink_forwarded_readings_total{sink="plant-influx"}' in metrics


def test_batches_older_than_the_age_bound_are_dropped_and_counted(tmp_path: Path) -> None:
    buffer = DurableBuffer(tmp_path / "b.db", max_bytes=10**9, max_age_s=0.5, when_full="block")
    buffer.append(["a 1"], 1.0)
    time.sleep(0.8)
    buffer.append(["b 2"], 2.0)
    batch = buffer.next_batch(timeout=0.1)
    assert batch is not None and batch.lines == ["b 2"]
    assert buffer.diagnostics()["dropped_readings"] == 1
    buffer.close()


def test_kill_9_of_the_gateway_mid_stream_loses_no_message_the_broker_acknowledged(
    influxd: InfluxD, mosquitto, tmp_path: Path, gateway_process
) -> None:
    """InfluxDB down, the gateway SIGKILLed mid-stream and restarted, InfluxDB back: every message whose
    PUBACK the publisher got is in InfluxDB, counted by its sequence number."""
    from tests.conftest import gateway_document
    from tests.processes import METRICS, CountingPublisher

    document = gateway_document(mosquitto.port, tmp_path)
    document["storage"]["sinks"] = [{"type": "influxdb", "name": "influx", "api": "v1", "url": influxd.url,
                                     "database": DB, "buffer": {"path": str(tmp_path / "buffer.db"),
                                                                "retry_min_s": 0.2, "retry_max_s": 1.0}}]
    influxd.stop()  # everything the gateway accepts stays in its buffer
    gateway = gateway_process(document, tmp_path).start()
    publisher = CountingPublisher(mosquitto, rate_per_s=300, t0=time.time() - 600, client_id="influx-publisher")
    publisher.start()
    try:
        time.sleep(3)
        gateway.kill()  # SIGKILL, mid-stream
        time.sleep(1)
        gateway.start()
        time.sleep(1)
    finally:
        publisher.stop()
    influxd.start()
    acknowledged = publisher.acknowledged

    def sequences() -> dict[int, int]:
        rows = influxd.query(DB, 'SELECT "value" FROM "telemetry" WHERE "device" = \'pump-01\'')
        counts: dict[int, int] = {}
        for row in rows:
            counts[int(row[1])] = counts.get(int(row[1]), 0) + 1
        return counts

    try:
        wait_until(lambda: acknowledged <= set(sequences()), timeout=60, what="every acknowledged message in InfluxDB")
    finally:
        gateway.terminate()
    stored = sequences()
    assert len(acknowledged) > 1000
    assert all(stored[seq] == METRICS for seq in acknowledged)


def test_replay_goes_oldest_data_first(tmp_path: Path) -> None:
    buffer = DurableBuffer(tmp_path / "b.db", max_bytes=10**9, max_age_s=3600, when_full="block")
    for first_ts in (30.0, 10.0, 20.0):  # e.g. a late device catching up
        buffer.append([f"line {first_ts}"], first_ts)
    order = []
    while (batch := buffer.next_batch(timeout=0.01)) is not None:
        order.append(batch.first_ts)
        buffer.acknowledge(batch)
    assert order == [10.0, 20.0, 30.0]
    assert buffer.diagnostics()["forwarded_readings"] == 3 and buffer.pending_readings == 0
    buffer.close()


@pytest.mark.parametrize("api", ["v1", "v2"])
def test_after_an_outage_the_replay_starts_at_the_next_probe_and_merges_stored_batches(
    influxd: InfluxD, victoria: VictoriaMetrics, tmp_path: Path, api: str
) -> None:
    if api == "v1":
        server, config = influxd, v1_config(influxd, retry_min_s=30.0, retry_max_s=30.0, probe_interval_s=0.2)
    else:
        server = victoria
        config = InfluxSinkConfig.model_validate({
            "type": "influxdb", "api": "v2", "url": victoria.url, "bucket": DB, "org": "plant",
            "buffer": {"retry_min_s": 30.0, "retry_max_s": 30.0, "probe_interval_s": 0.2}})
    server.stop()
    writer = CountingWriter(make_writer(config))
    buffer = DurableBuffer(tmp_path / "b.db", max_bytes=2**30, max_age_s=3600, when_full="block")
    sink = BufferedSink("plant", writer, buffer, TAGS, batch_readings=5000, retry_min_s=30.0, retry_max_s=30.0,
                        probe_interval_s=0.2)
    t0 = time.time() - 600
    for i in range(100):  # the pipeline's small batches of the outage
        sink.write(readings(t0 + i, 100))
    wait_until(lambda: sink.connected is False, timeout=10, what="the failed write")
    server.start()  # within the 30 s backoff
    back = time.perf_counter()
    assert wait_until_drained(sink, timeout=60)
    sink.close()
    # A probe noticed the server, not the end of the 30 s backoff.
    assert writer.first_success_at is not None and writer.first_success_at - back < 10
    # 10,000 readings in 100 stored batches went out as two full-size writes.
    assert writer.requests == [5000, 5000]
    assert buffer.pending_readings == 0


class RecordingWriter:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def write_lines(self, lines: list[str]) -> None:
        self.lines += lines

    def ping(self) -> bool:
        return True

    def close(self) -> None:
        pass


def test_a_series_tags_follow_a_configuration_change(tmp_path: Path) -> None:
    """The sink keeps each series' tags between batches; a new site, model or unit shows in the next line."""
    from gateway.core import SeriesInfo

    tags = {"p1": {"site": "north", "model": "A"}}
    info: dict[tuple[str, str], SeriesInfo] = {}
    writer = RecordingWriter()
    buffer = DurableBuffer(tmp_path / "b.db", max_bytes=2**24, max_age_s=86400, when_full="block")
    sink = BufferedSink("s", writer, buffer, tags, info, retry_min_s=0.01)
    try:
        sink.write([Reading("p1", "flow", 1.0, 1764064800.0, Quality.GOOD, "plc")])
        tags.clear()  # as the gateway does on a reload: the outer dict in place, new inner dicts
        tags.update({"p1": {"site": "south", "model": "B"}})
        sink.write([Reading("p1", "flow", 2.0, 1764064801.0, Quality.GOOD, "plc")])
        info[("p1", "flow")] = SeriesInfo("m3/h", "float32")
        sink.write([Reading("p1", "flow", math.nan, 1764064802.0, Quality.BAD, "plc")])
        wait_until(lambda: len(writer.lines) == 3, timeout=10, what="three lines forwarded")
    finally:
        sink.close()
    assert writer.lines == [
        'telemetry,device=p1,metric=flow,source=plc,site=north,model=A value=1.0,quality="good" 1764064800000000000',
        'telemetry,device=p1,metric=flow,source=plc,site=south,model=B value=2.0,quality="good" 1764064801000000000',
        'telemetry,device=p1,metric=flow,source=plc,unit=m3/h,data_type=float32,site=south,model=B '
        'quality="bad" 1764064802000000000',
    ]
