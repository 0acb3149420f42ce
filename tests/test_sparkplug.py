"""Sparkplug B through a real Mosquitto: births, aliases, deaths, sequence gaps and rebirth requests."""

from __future__ import annotations

import time
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from connectors.mqtt.sparkplug.session import BD_SEQ, REBIRTH_METRIC
from connectors.mqtt.sparkplug.sparkplug_b_pb2 import Payload
from gateway.broker import Mosquitto
from tests.conftest import gateway_document, wait_until

DOUBLE, INT16, BOOLEAN, STRING, INT64 = 10, 2, 11, 12, 4


class EdgeNode:
    """A minimal Sparkplug B edge node: NDEATH as its will, births with aliases, data by alias."""

    def __init__(self, broker: Mosquitto, group: str, name: str) -> None:
        self.prefix = f"spBv1.0/{group}"
        self.name = name
        self.seq = 0
        self.bd_seq = 7
        self.clock_ms = 0
        self.rebirth_requests: list[Payload] = []
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"edge-{name}")
        death = Payload(timestamp=int(time.time() * 1000))
        death.metrics.add(name=BD_SEQ, datatype=INT64, long_value=self.bd_seq)
        self.client.will_set(f"{self.prefix}/NDEATH/{name}", death.SerializeToString(), qos=1)
        self.client.on_message = lambda client, userdata, message: self.rebirth_requests.append(
            Payload.FromString(message.payload))
        self.client.connect(broker.host, broker.port)
        self.client.subscribe(f"{self.prefix}/NCMD/{name}", qos=1)
        self.client.loop_start()

    def send(self, kind: str, metrics: list[tuple[str | None, int, int, object]], device: str | None = None,
             seq: int | None = None) -> None:
        # Strictly increasing: readings of one series at one instant overwrite each other in the store.
        self.clock_ms = max(int(time.time() * 1000), self.clock_ms + 1)
        payload = Payload(timestamp=self.clock_ms)
        if kind == "NBIRTH":
            self.seq = 0
            payload.metrics.add(name=BD_SEQ, datatype=INT64, long_value=self.bd_seq)
        else:
            self.seq = (self.seq + 1) % 256
        payload.seq = self.seq if seq is None else seq
        for name, alias, datatype, value in metrics:
            metric = payload.metrics.add(alias=alias, datatype=datatype)
            if name is not None:
                metric.name = name
            field = {DOUBLE: "double_value", INT16: "int_value", BOOLEAN: "boolean_value",
                     STRING: "string_value"}[datatype]
            if value is None:
                metric.is_null = True
            else:
                setattr(metric, field, value)
        topic = f"{self.prefix}/{kind}/{self.name}" + (f"/{device}" if device else "")
        self.client.publish(topic, payload.SerializeToString(), qos=1).wait_for_publish(5)

    def birth(self) -> None:
        self.send("NBIRTH", [("Node Control/Rebirth", 0, BOOLEAN, False)])
        self.send("DBIRTH", [("vibration", 1, DOUBLE, 2.0), ("bearing_temp", 2, INT16, 55),
                             ("state", 3, STRING, "running")], device="pump-01")

    def crash(self) -> None:
        """Drop the connection without DISCONNECT: the broker publishes the will (NDEATH)."""
        self.client.loop_stop()
        self.client.socket().close()


def test_births_aliases_deaths_and_rebirth_on_a_sequence_gap(
    mosquitto: Mosquitto, tmp_path: Path, start_gateway
) -> None:
    document = gateway_document(mosquitto.port, tmp_path)
    document["sources"] = [{"type": "mqtt", "name": "spb", "port": mosquitto.port, "client_id": "pmgw-spb",
                            "sparkplug": {"group_id": "plant"}}]
    document["ticketing"]["device_offline"] = {"open_work_order": True}
    document["engineers"].append({"id": "eng-instruments", "name": "Ida", "skills": ["instrumentation"],
                                  "home": {"latitude": 53.56, "longitude": 10.0}})
    gw = start_gateway(document)
    edge = EdgeNode(mosquitto, "plant", "edge-1")
    edge.birth()
    edge.send("DDATA", [(None, 1, DOUBLE, 2.5), (None, 2, INT16, (-3) & 0xFFFF)], device="pump-01")

    def history(metric: str) -> list[float | None]:
        return [r["value"] for r in gw.get("/devices/pump-01/readings", metric=metric, since=time.time() - 60)["readings"]]

    wait_until(lambda: history("vibration") == [2.0, 2.5], timeout=10, what="birth and alias data")
    assert history("bearing_temp") == [55.0, -3.0]  # signed int16 in the unsigned field
    connector = gw.get("/health")["connectors"][0]
    assert connector["errors"] == {"non_numeric_metric": 1}  # the string metric of the birth: counted, not stored
    assert edge.rebirth_requests == []

    # A lost message: the next seq skips one. The data is kept, and a rebirth is requested.
    edge.send("DDATA", [(None, 1, DOUBLE, 3.0)], device="pump-01", seq=edge.seq + 2)
    wait_until(lambda: edge.rebirth_requests, timeout=10, what="a rebirth request")
    request = edge.rebirth_requests[0].metrics[0]
    assert (request.name, request.boolean_value) == (REBIRTH_METRIC, True)
    wait_until(lambda: history("vibration")[-1:] == [3.0], timeout=10, what="the data after the gap")
    assert gw.get("/health")["connectors"][0]["errors"]["sequence_gap"] == 1

    # The edge node answers with births; a null value is a BAD reading, never a number.
    edge.birth()
    edge.send("DDATA", [(None, 1, DOUBLE, None)], device="pump-01")
    wait_until(lambda: len(history("vibration")) == 5 and history("vibration")[-1] is None, timeout=10,
               what="the null reading")

    # The edge node dies without a word: its will (NDEATH, same bdSeq) takes pump-01 offline.
    edge.crash()
    orders = wait_until(lambda: gw.items("/work-orders", device_id="pump-01"), timeout=20, what="offline work order")
    assert orders[0]["failure_mode"] == "AIR" and orders[0]["origin"] == "device_alarm"
    assert gw.get("/health")["connectors"][0]["offline_devices"] == ["pump-01"]
    # Its last values are still shown, but as what they are: stale (Sparkplug's host rule for a death).
    latest = gw.get("/devices/pump-01/readings/latest")
    assert latest["stale"] is True and latest["readings"]
    assert {r["quality"] for r in latest["readings"]} == {"stale"}

    # Back: births clear the condition on the ticket (it stays open).
    edge = EdgeNode(mosquitto, "plant", "edge-1")
    edge.birth()
    wait_until(lambda: any(e["kind"] == "condition_cleared"
                           for e in gw.get(f"/work-orders/{orders[0]['code']}")["events"]),
               timeout=10, what="device back online")
    assert gw.get("/health")["connectors"][0]["offline_devices"] == []
    latest = gw.get("/devices/pump-01/readings/latest")
    assert latest["stale"] is False and "stale" not in {r["quality"] for r in latest["readings"]}
    edge.client.loop_stop()


def test_data_before_birth_is_rejected_not_stored_and_a_rebirth_requested(
    mosquitto: Mosquitto, tmp_path: Path, start_gateway
) -> None:
    document = gateway_document(mosquitto.port, tmp_path)
    document["sources"] = [{"type": "mqtt", "name": "spb", "port": mosquitto.port, "client_id": "pmgw-spb",
                            "sparkplug": {"group_id": "plant", "rebirth_min_interval_s": 0}}]
    gw = start_gateway(document)
    edge = EdgeNode(mosquitto, "plant", "edge-1")
    # The gateway has never seen this node's birth (e.g. it started after the node).
    edge.send("DDATA", [("vibration", 1, DOUBLE, 9.0)], device="pump-01")
    edge.send("NDATA", [("vibration", 1, DOUBLE, 9.0)])
    wait_until(lambda: len(edge.rebirth_requests) >= 1, timeout=10, what="a rebirth request")
    edge.birth()
    # A born node, but a device it never gave a DBIRTH for.
    edge.send("DDATA", [("flow", 1, DOUBLE, 9.0)], device="pump-02")
    edge.send("DDATA", [(None, 1, DOUBLE, 2.5)], device="pump-01")

    def vibration() -> list[float]:
        return [r["value"] for r in gw.get("/devices/pump-01/readings", metric="vibration",
                                           since=time.time() - 60)["readings"]]

    wait_until(lambda: vibration() == [2.0, 2.5], timeout=10, what="the data after the birth, and only that")
    assert gw.get("/health")["connectors"][0]["errors"]["data_before_birth"] == 3
    assert gw.get("/devices/pump-02/readings/latest")["readings"] == []
    edge.client.loop_stop()


def test_device_and_metric_names_are_mapped_and_units_come_from_the_birth(
    mosquitto: Mosquitto, tmp_path: Path, start_gateway
) -> None:
    document = gateway_document(mosquitto.port, tmp_path)
    document["sources"] = [{"type": "mqtt", "name": "spb", "port": mosquitto.port, "client_id": "pmgw-spb-map",
                            "sparkplug": {"group_id": "plant",
                                          "devices": {"Pump A": "pump-02"},
                                          "metrics": {"Vib RMS": {"name": "vibration"},
                                                      "Bearing T": {"name": "bearing_temp", "unit": "degC"}}}}]
    gw = start_gateway(document)
    edge = EdgeNode(mosquitto, "plant", "edge-9")
    edge.send("NBIRTH", [])
    birth = Payload(timestamp=int(time.time() * 1000), seq=1)
    for name, alias, datatype, field, value, unit in [("Vib RMS", 1, DOUBLE, "double_value", 2.25, "mm/s"),
                                                      ("Bearing T", 2, INT16, "int_value", 131, "degF")]:
        metric = birth.metrics.add(name=name, alias=alias, datatype=datatype)
        setattr(metric, field, value)
        metric.properties.keys.append("engUnit")
        metric.properties.values.add(type=12, string_value=unit)
    edge.seq = 1
    edge.client.publish("spBv1.0/plant/DBIRTH/edge-9/Pump A", birth.SerializeToString(), qos=1).wait_for_publish(5)

    def latest() -> dict[str, dict]:
        return {r["metric"]: r for r in gw.get("/devices/pump-02/readings/latest")["readings"]}

    shown = wait_until(lambda: (found := latest()).get("vibration", {}).get("unit") and found, timeout=15,
                       what="pump-02's renamed metrics with their units")
    assert (shown["vibration"]["value"], shown["vibration"]["unit"], shown["vibration"]["data_type"]) == (
        2.25, "mm/s", "Double")
    # The config's unit wins over the birth's engUnit; the type is the one the edge node sends.
    assert (shown["bearing_temp"]["unit"], shown["bearing_temp"]["data_type"]) == ("degC", "Int16")
    assert gw.get("/health")["connectors"][0]["errors"].get("unknown_device") is None

    # The mapped device dies: the asset it stands for is offline (and its last values stale).
    edge.send("DDEATH", [], device="Pump A")
    wait_until(lambda: gw.get("/health")["connectors"][0]["offline_devices"] == ["pump-02"], timeout=10,
               what="pump-02 offline after its DDEATH")
    assert gw.get("/devices/pump-02/readings/latest")["stale"] is True
    edge.client.loop_stop()
