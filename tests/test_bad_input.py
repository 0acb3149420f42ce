"""Hostile input against the running gateway: rejected, counted, shown in /health, and nothing else lost."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import orjson
import pytest

from detectors.engine import RESYNC_AFTER
from edge.sqlite_store import SqliteStore, SqliteStoreConfig
from gateway.broker import Mosquitto
from gateway.core import Reading
from gateway.supervision import TaskHealth, supervise
from tests.conftest import gateway_document, wait_until
from tests.test_mqtt_ingest import publish, publisher


def nested(depth: int, leaf: object = 1.0) -> bytes:
    return b"[" * depth + orjson.dumps(leaf) + b"]" * depth


def latest(gw, device: str) -> dict[str, float]:
    return {r["metric"]: r["value"] for r in gw.get(f"/devices/{device}/readings/latest")["readings"]}


def test_deeply_nested_values_are_rejected_and_the_gateway_goes_on(
    mosquitto: Mosquitto, tmp_path: Path, start_gateway
) -> None:
    gw = start_gateway(gateway_document(mosquitto.port, tmp_path))
    client = publisher(mosquitto)
    now = time.time()
    deep = nested(990)  # within orjson's limit: it parses, and formatting it used to recurse
    publish(client, "plant/north/pump-01/telemetry", b'{"metrics": {"vibration": ' + deep + b'}}')
    publish(client, "plant/north/pump-01/telemetry", nested(5000))  # past orjson's limit
    publish(client, "plant/north/motor-01/alarm", b'{"code": "OHE", "severity": ' + deep + b'}')
    publish(client, "plant/north/motor-01/alarm", b'{"code": "OHE", "severity": "high", "message": ' + deep + b'}')
    publish(client, "plant/north/pump-01/telemetry", orjson.dumps({"ts": now, "metrics": {"flow": 80.0}}))

    assert wait_until(lambda: latest(gw, "pump-01"), timeout=10, what="the good reading") == {"flow": 80.0}
    errors = gw.get("/health")["connectors"][0]["errors"]
    assert errors == {"wrong_type": 3, "invalid_json": 1}
    assert gw.gateway.connector_health["test-broker"].restarts == 0
    assert gw.items("/work-orders") == []
    client.loop_stop()


async def test_a_connector_that_fails_or_ends_is_restarted_and_reported() -> None:
    runs: list[str] = []
    forever = asyncio.Event()

    async def flaky() -> None:
        runs.append("run")
        if len(runs) == 1:
            raise RuntimeError("network thread failed: boom")
        if len(runs) == 2:
            return  # ended by itself
        await forever.wait()

    health = TaskHealth("connector plant-broker")
    from connectors.backoff import Backoff

    task = asyncio.create_task(supervise(health, flaky, Backoff(0.01, 0.02)))
    for _ in range(100):
        if len(runs) == 3:
            break
        await asyncio.sleep(0.01)
    assert len(runs) == 3 and health.restarts == 2
    assert health.last_error == "it ended by itself"
    assert "connector plant-broker was restarted 2 time(s)" in (health.problem(time.time()) or "")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def test_implausible_timestamps_are_rejected_before_any_sink(
    mosquitto: Mosquitto, tmp_path: Path, start_gateway
) -> None:
    gw = start_gateway(gateway_document(mosquitto.port, tmp_path))
    client = publisher(mosquitto)
    now = time.time()
    for ts in (1e300, 4102444800.0, now + 3600, 0, 86400.0):  # far future, 2100, an hour ahead, 1970
        publish(client, "plant/north/pump-01/telemetry", orjson.dumps({"ts": ts, "metrics": {"vibration": 9.9}}))
    for i in range(3):
        publish(client, "plant/north/pump-01/telemetry",
                orjson.dumps({"ts": now - 3 + i, "metrics": {"vibration": 2.0 + i}}))

    assert wait_until(lambda: latest(gw, "pump-01").get("vibration") == 4.0, timeout=10, what="latest follows")
    health = gw.get("/health")
    assert health["pipeline"]["ingest"]["rejected"] == {"timestamp_in_future": 3, "timestamp_too_old": 2}
    assert any(p.startswith("device pump-01: 3 readings rejected (timestamp in future") for p in health["problems"])
    gw.gateway.store.flush()
    assert health["sinks"][0]["errors"] == 0
    history = gw.get("/devices/pump-01/readings", metric="vibration", since=0, until=1e11)["readings"]
    assert [r["value"] for r in history] == [2.0, 3.0, 4.0]
    # Writes and rollups keep working.
    publish(client, "plant/north/pump-01/telemetry", orjson.dumps({"ts": now, "metrics": {"vibration": 5.0}}))
    assert wait_until(lambda: latest(gw, "pump-01").get("vibration") == 5.0, timeout=10, what="a later write")
    client.loop_stop()


def test_a_device_whose_clock_goes_back_is_degraded_in_health_and_the_fleet_view_and_still_scored(
    mosquitto: Mosquitto, tmp_path: Path, start_gateway
) -> None:
    gw = start_gateway(gateway_document(mosquitto.port, tmp_path))
    client = publisher(mosquitto)
    now = time.time()
    # Two minutes ahead (within the ingest skew, so stored), then the device's clock is right again.
    publish(client, "plant/north/pump-01/telemetry", orjson.dumps({"ts": now + 120, "metrics": {"flow": 80.0}}))
    for i in range(RESYNC_AFTER + 5):
        publish(client, "plant/north/pump-01/telemetry",
                orjson.dumps({"ts": now - 30 + i, "metrics": {"flow": 80.0 + i % 3}}))

    def degraded() -> dict:
        problems = [p for p in gw.get("/health")["problems"] if p.startswith("device pump-01")]
        return len(problems) == 2 and problems

    problems = wait_until(degraded, timeout=10, what="pump-01 degraded in /health")
    assert problems[0].startswith("device pump-01: its clock went back, scoring follows it")
    assert problems[1].startswith(f"device pump-01: {RESYNC_AFTER - 1} reading(s) not scored (out of order")
    fleet = {entry["id"]: entry["health"] for entry in gw.get("/fleet")["items"]}
    assert fleet["pump-01"] == "degraded" and fleet["pump-02"] != "degraded"
    status = gw.get("/devices/pump-01/detector")
    assert status["degraded"] and status["rejected"]["out_of_order"]["count"] == RESYNC_AFTER - 1
    assert status["samples"] == 1 + 6  # the reading ahead, then the device's own clock followed
    client.loop_stop()


def test_the_store_survives_any_timestamp_and_counts_its_failures(tmp_path: Path) -> None:
    store = SqliteStore(SqliteStoreConfig(path=tmp_path / "t.db"))
    now = time.time()
    store.write([Reading("d", "m", 1.0, 1e300), Reading("d", "m", 2.0, now)])
    store.flush()
    store.write([Reading("d", "m", 3.0, now + 1)])
    store.flush()
    assert store.errors == 0
    assert [b["count"] for b in store.rollups("d", "m", now - 120, now + 120)] in ([2], [1, 1])
    assert store.rollups("d", "m", 1e299, 1e301) == []
    store.close()


def test_a_failing_sink_shows_in_its_counters_and_in_health(
    mosquitto: Mosquitto, tmp_path: Path, start_gateway
) -> None:
    gw = start_gateway(gateway_document(mosquitto.port, tmp_path))
    client = publisher(mosquitto)
    publish(client, "plant/north/pump-01/telemetry", orjson.dumps({"ts": time.time(), "metrics": {"flow": 1.0}}))
    wait_until(lambda: latest(gw, "pump-01"), timeout=10, what="first reading")
    # The database damaged behind the gateway's back.
    with sqlite3.connect(tmp_path / "telemetry.db") as other:
        other.execute("DROP TABLE readings")
    publish(client, "plant/north/pump-01/telemetry", orjson.dumps({"ts": time.time(), "metrics": {"flow": 2.0}}))

    def failed() -> dict | None:
        health = gw.get("/health")
        return health if health["sinks"][0]["errors"] else None

    health = wait_until(failed, timeout=10, what="the store's failure to be counted")
    assert health["status"] == "degraded"
    assert health["pipeline"]["errors"]["sink:sqlite"] >= 1
    assert any(p.startswith("sink sqlite has failed 1 time(s), last: write: no such table: readings")
               for p in health["problems"]), health["problems"]
    client.loop_stop()


def test_new_metric_names_per_device_are_capped_and_counted(
    mosquitto: Mosquitto, tmp_path: Path, start_gateway
) -> None:
    document = gateway_document(mosquitto.port, tmp_path, ingest={"max_metrics_per_device": 50})
    gw = start_gateway(document)
    client = publisher(mosquitto)
    now = time.time()
    for message in range(20):  # 200 new names, 10 per message
        metrics = {f"junk_{message}_{k}": 1.0 for k in range(10)}
        publish(client, "plant/north/pump-01/telemetry", orjson.dumps({"ts": now, "metrics": metrics}))
    publish(client, "plant/north/pump-01/telemetry", orjson.dumps({"ts": now, "metrics": {"junk_0_0": 7.0}}))
    publish(client, "plant/north/pump-02/telemetry", orjson.dumps({"ts": now, "metrics": {"flow": 3.0}}))

    assert wait_until(lambda: latest(gw, "pump-02"), timeout=10, what="another device") == {"flow": 3.0}
    wait_until(lambda: latest(gw, "pump-01").get("junk_0_0") == 7.0, timeout=10, what="a known name still flows")
    assert len(latest(gw, "pump-01")) == 50
    health = gw.get("/health")
    assert health["pipeline"]["ingest"]["rejected"] == {"too_many_metrics": 150}
    assert any(p.startswith("device pump-01: 150 readings rejected (too many metrics") for p in health["problems"])
    client.loop_stop()


def test_oversized_and_out_of_range_requests_are_refused(mosquitto: Mosquitto, tmp_path: Path, start_gateway) -> None:
    import httpx

    document = gateway_document(mosquitto.port, tmp_path)
    document["api"]["max_body_bytes"] = 65536
    gw = start_gateway(document)
    assert gw.http.get("/work-orders", params={"offset": 2**63}).status_code == 422
    assert gw.http.get("/work-orders", params={"offset": 10**9}).json()["items"] == []
    assert gw.http.get("/anomalies", params={"since": "inf"}).status_code == 422
    assert gw.http.get("/devices/pump-01/readings", params={"until": 1e300}).status_code == 422
    # A declared body over the limit is refused unread; so is a chunked one once it passes the limit.
    big = b'{"device_id": "pump-01", "description": "' + b"x" * 200_000 + b'"}'
    refused = gw.http.post("/work-orders", content=big, headers={"content-type": "application/json"})
    assert refused.status_code == 413 and "65536 bytes" in refused.json()["detail"]

    def chunks():
        for _ in range(100):
            yield b"x" * 10_000

    with httpx.Client(base_url=gw.url, timeout=10) as client:
        assert client.post("/work-orders", content=chunks(), headers={"content-type": "application/json"}
                           ).status_code == 413
    # Within the body limit, every string field has its own cap.
    manual = {"device_id": "pump-01", "failure_mode": "NOI", "title": "x" * 301}
    assert gw.http.post("/work-orders", json=manual).status_code == 422
    manual = manual | {"title": "noisy", "description": "y" * 20_001}
    assert gw.http.post("/work-orders", json=manual).status_code == 422
    assert gw.http.post("/work-orders", json=manual | {"description": "ok"}).status_code == 201
    assert gw.get("/health")["status"] in ("ok", "degraded")  # still serving


def test_a_topic_that_is_not_utf8_is_rejected_not_raised() -> None:
    import paho.mqtt.client as mqtt

    from connectors.mqtt import MqttConnector, MqttSourceConfig

    connector = MqttConnector(MqttSourceConfig(type="mqtt", topic="plant/{site}/{device}/telemetry"), {"pump-01"})
    message = mqtt.MQTTMessage(mid=1, topic=b"plant/\xff/pump-01/telemetry")
    message.payload = b'{"flow": 1.0}'
    connector._on_message(None, None, message)  # what paho's network loop calls
    assert connector.errors == {"topic_mismatch": 1}
