"""MQTT telemetry through a real Mosquitto into the running gateway, bad input included."""

from __future__ import annotations

import time
from pathlib import Path

import orjson
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from gateway.broker import Mosquitto
from tests.conftest import gateway_document, wait_until


def publisher(broker: Mosquitto) -> mqtt.Client:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="test-publisher")
    client.connect(broker.host, broker.port)
    client.loop_start()
    return client


def publish(client: mqtt.Client, topic: str, payload: bytes | str) -> None:
    client.publish(topic, payload, qos=1).wait_for_publish(5)


def test_good_readings_are_stored_and_served(mosquitto: Mosquitto, tmp_path: Path, start_gateway) -> None:
    gw = start_gateway(gateway_document(mosquitto.port, tmp_path))
    client = publisher(mosquitto)
    now = time.time()
    for i in range(5):
        publish(client, "plant/north/pump-01/telemetry",
                orjson.dumps({"ts": now - 5 + i, "metrics": {"vibration": 2.0 + i, "flow": 80.5}}))

    latest = wait_until(
        lambda: [r for r in gw.get("/devices/pump-01/readings/latest")["readings"] if r["metric"] == "vibration"
                 and r["value"] == 6.0], timeout=10, what="latest vibration")
    assert latest[0]["timestamp"] == now - 1
    history = gw.get("/devices/pump-01/readings", metric="vibration", since=now - 60)
    assert [r["value"] for r in history["readings"]] == [2.0, 3.0, 4.0, 5.0, 6.0]
    assert history["truncated"] is False and history["next_until"] is None
    # More than 'limit': the newest, said to be truncated, and the rest one page further, none twice.
    page = gw.get("/devices/pump-01/readings", metric="vibration", since=now - 60, limit=3)
    assert [r["value"] for r in page["readings"]] == [4.0, 5.0, 6.0] and page["truncated"] is True
    rest = gw.get("/devices/pump-01/readings", metric="vibration", since=now - 60, until=page["next_until"], limit=3)
    assert [r["value"] for r in rest["readings"]] == [2.0, 3.0] and rest["truncated"] is False
    assert gw.get("/health")["connectors"][0]["errors"] == {}
    gw.gateway.store.flush()
    buckets = gw.get("/devices/pump-01/readings", metric="vibration", since=now - 120,
                     resolution="rollup")["rollups"]
    assert sum(b["count"] for b in buckets) == 5  # the five readings may straddle a minute
    assert min(b["min"] for b in buckets) == 2.0 and max(b["max"] for b in buckets) == 6.0
    assert gw.http.get("/devices/pump-01/readings", params={"resolution": "rollup"}).status_code == 422
    client.loop_stop()


def test_malformed_payloads_are_rejected_counted_and_the_rest_flows(
    mosquitto: Mosquitto, tmp_path: Path, start_gateway
) -> None:
    gw = start_gateway(gateway_document(mosquitto.port, tmp_path))
    client = publisher(mosquitto)
    now = time.time()
    bad = {
        "invalid_json": ("plant/north/pump-01/telemetry", b"{not json"),
        "not_an_object": ("plant/north/pump-01/telemetry", b"[1, 2, 3]"),
        "unknown_device": ("plant/north/pump-99/telemetry", orjson.dumps({"metrics": {"vibration": 1.0}})),
        "missing_field": ("plant/north/pump-01/telemetry", orjson.dumps({"ts": now, "values": {"vibration": 1.0}})),
        "bad_timestamp": ("plant/north/pump-01/telemetry", orjson.dumps({"ts": "yesterday", "metrics": {"a": 1}})),
    }
    for topic, payload in bad.values():
        publish(client, topic, payload)
    # One wrong-typed metric: rejected on its own, the good metric of the same message is kept.
    publish(client, "plant/north/pump-02/telemetry",
            orjson.dumps({"ts": now, "metrics": {"vibration": "high", "flow": 77.0}}))
    # An alarm without a code.
    publish(client, "plant/north/pump-02/alarm", orjson.dumps({"severity": "high"}))
    # After all that, good data still flows.
    publish(client, "plant/north/pump-01/telemetry", orjson.dumps({"ts": now, "metrics": {"vibration": 2.5}}))

    def counted() -> dict[str, int] | None:
        errors = gw.get("/health")["connectors"][0]["errors"]
        return errors if sum(errors.values()) >= 7 else None

    errors = wait_until(counted, timeout=10, what="rejections to be counted")
    assert errors == {
        "invalid_json": 1, "not_an_object": 1, "unknown_device": 1, "missing_field": 2,
        "bad_timestamp": 1, "wrong_type": 1,
    }
    def latest(device: str) -> dict[str, float]:
        return {r["metric"]: r["value"] for r in gw.get(f"/devices/{device}/readings/latest")["readings"]}

    assert wait_until(lambda: latest("pump-02"), timeout=10, what="pump-02 reading") == {"flow": 77.0}
    assert wait_until(lambda: latest("pump-01"), timeout=10, what="pump-01 reading") == {"vibration": 2.5}
    assert gw.items("/work-orders") == []
    client.loop_stop()


def test_device_alarm_opens_a_work_order(mosquitto: Mosquitto, tmp_path: Path, start_gateway) -> None:
    gw = start_gateway(gateway_document(mosquitto.port, tmp_path))
    client = publisher(mosquitto)
    # What the motor reported before its alarm: the work order's evidence, though the alarm carries none.
    now = time.time()
    for i in range(3):
        publish(client, "plant/north/motor-01/telemetry",
                orjson.dumps({"ts": now - 3 + i, "metrics": {"motor_current": 38.0 + i}}))
    wait_until(lambda: len(gw.get("/devices/motor-01/readings", since=now - 10)["readings"]) == 3, timeout=10,
               what="the motor's readings stored")
    alarm = {"code": "ohe", "severity": "high", "message": "winding over temperature", "active": True}
    publish(client, "plant/north/motor-01/alarm", orjson.dumps(alarm))
    publish(client, "plant/north/motor-01/alarm", orjson.dumps(alarm))  # repeat: an occurrence, not a ticket
    publish(client, "plant/north/motor-01/alarm", orjson.dumps(alarm | {"active": False}))

    def cleared_order() -> dict | None:
        orders = gw.items("/work-orders", device_id="motor-01")
        if not orders:
            return None
        detail = gw.get(f"/work-orders/{orders[0]['code']}")
        return detail if any(e["kind"] == "condition_cleared" for e in detail["events"]) else None

    order = wait_until(cleared_order, timeout=10, what="alarm work order with its cleared event")
    assert len(gw.items("/work-orders")) == 1
    assert order["origin"] == "device_alarm"
    assert order["failure_mode"] == "OHE"
    assert order["occurrences"] == 2
    # A cleared signal never closes the ticket.
    assert order["state"] == "DISPATCHED"
    assert order["assigned_engineer_id"] == "eng-mechanical"
    assert order["priority"] == "P2"  # high severity x medium criticality
    assert [(r["metric"], r["value"]) for r in order["context"]["triggering_readings"]] == [
        ("motor_current", 38.0), ("motor_current", 39.0), ("motor_current", 40.0)]
    client.loop_stop()

    # The lifecycle over REST: legal steps are events, illegal ones a 409 with the reason.
    url = f"/work-orders/{order['code']}"
    step = gw.http.post(f"{url}/transitions", json={"to": "EN_ROUTE"})
    assert step.status_code == 200 and step.json()["state"] == "EN_ROUTE"
    refused = gw.http.post(f"{url}/transitions", json={"to": "DONE"})
    assert refused.status_code == 409
    assert refused.json()["detail"].startswith("EN_ROUTE -> DONE is not allowed (from EN_ROUTE: ")
    assert gw.http.post(f"{url}/transitions", json={"to": "FIXED"}).status_code == 422
    assert gw.http.post("/work-orders/WO-19990101-0001/transitions",
                        json={"to": "EN_ROUTE"}).status_code == 404
    # created, dispatched, occurrence, condition_cleared, accepted (setting off), en_route
    assert gw.get(f"{url}/verify") == {"code": order["code"], "valid": True, "events": 6, "broken_at": None,
                                       "reason": None}


def test_broker_restart_is_survived_without_restarting_the_gateway(
    mosquitto: Mosquitto, tmp_path: Path, start_gateway
) -> None:
    gw = start_gateway(gateway_document(mosquitto.port, tmp_path))
    client = publisher(mosquitto)
    publish(client, "plant/north/pump-01/telemetry", orjson.dumps({"ts": time.time(), "metrics": {"flow": 1.0}}))
    wait_until(lambda: gw.get("/devices/pump-01/readings/latest")["readings"], timeout=10, what="first reading")
    client.loop_stop()

    mosquitto.stop()
    wait_until(lambda: not gw.get("/health")["connectors"][0]["connected"], timeout=30, what="disconnect seen")
    assert gw.get("/health")["status"] == "degraded"
    restarted = Mosquitto.start(port=mosquitto.port, directory=mosquitto.directory)
    try:
        wait_until(lambda: gw.get("/health")["connectors"][0]["connected"], timeout=60, what="reconnect")
        client = publisher(restarted)
        publish(client, "plant/north/pump-01/telemetry", orjson.dumps({"ts": time.time(), "metrics": {"flow": 2.0}}))
        wait_until(lambda: [r for r in gw.get("/devices/pump-01/readings/latest")["readings"] if r["value"] == 2.0],
                   timeout=10, what="reading after the restart")
        assert gw.get("/health")["connectors"][0]["reconnects"] == 1
        client.loop_stop()
    finally:
        restarted.stop()


def test_silent_device_goes_offline_and_comes_back(mosquitto: Mosquitto, tmp_path: Path, start_gateway) -> None:
    document = gateway_document(mosquitto.port, tmp_path)
    document["sources"][0]["offline_after_s"] = 1.0
    document["ticketing"]["device_offline"] = {"open_work_order": True}
    document["engineers"].append({"id": "eng-instruments", "name": "Ida", "skills": ["instrumentation"],
                                  "home": {"latitude": 53.56, "longitude": 10.0}})
    gw = start_gateway(document)
    client = publisher(mosquitto)
    publish(client, "plant/north/pump-01/telemetry", orjson.dumps({"metrics": {"vibration": 2.0}}))

    orders = wait_until(lambda: gw.items("/work-orders", device_id="pump-01"), timeout=10, what="offline work order")
    assert (orders[0]["failure_mode"], orders[0]["assigned_engineer_id"]) == ("AIR", "eng-instruments")
    assert gw.get("/health")["connectors"][0]["offline_devices"] == ["pump-01"]
    # Devices that never reported on this broker are not guessed to be offline.
    assert gw.items("/work-orders", device_id="pump-02") == []

    publish(client, "plant/north/pump-01/telemetry", orjson.dumps({"metrics": {"vibration": 2.1}}))
    events = wait_until(
        lambda: [e for e in gw.get(f"/work-orders/{orders[0]['code']}")["events"] if e["kind"] == "condition_cleared"],
        timeout=10, what="back online recorded")
    assert events[0]["actor"] == "test-broker"
    client.loop_stop()
