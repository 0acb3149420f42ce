"""The simulators' physics: the site's environment and the model shape the metrics, faults heal when
repaired or given an end, and the MQTT fleet takes a repair on its control topic."""

from __future__ import annotations

import statistics
import threading
import time
from typing import Any
from pathlib import Path

import orjson
import paho.mqtt.client as mqtt
import paho.mqtt.publish as publish
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from gateway.broker import Mosquitto
from gateway.config import parse_config
from gateway.simulation import device_specs
from simulators.mqtt_fleet import FleetConfig, FleetSimulator
from simulators.physics import DeviceModel, DeviceSpec, Fault, ModelProfile
from tests.conftest import gateway_document, wait_until

VIBRATION_LIMIT = 7.1


def run(model: DeviceModel, start: int, end: int) -> list[dict[str, float]]:
    return [model.step(float(t)) for t in range(start, end)]


def first_over_limit(model: DeviceModel, end: int) -> float | None:
    for t in range(1, end):
        if model.step(float(t))["vibration"] > VIBRATION_LIMIT:
            return float(t)
    return None


def test_a_humid_site_wears_the_same_fault_faster() -> None:
    """Bearing wear of the same nominal duration crosses the vibration limit sooner at 85 % humidity
    than at 60 %: in about 1/1.5 of the time, the pace the model states for its ground truth."""
    crossings = {}
    for humidity in (60, 85):
        device = DeviceModel(DeviceSpec("p", "pump", "s", environment={"humidity_pct": humidity}), seed=3)
        fault = Fault("p", "bearing_wear", onset=100.0, duration=3000.0)
        device.inject(fault)
        crossings[humidity] = first_over_limit(device, 4000) - fault.onset
        assert abs(device.failure_time(fault) - fault.onset - 3000.0 / device.wear_rate) < 1e-9
    assert crossings[85] / crossings[60] == pytest.approx(1 / 1.5, rel=0.1)


def test_the_ambient_temperature_sets_the_thermal_baseline() -> None:
    temps = {}
    for ambient in (15.0, 35.0):
        device = DeviceModel(DeviceSpec("m", "motor", "s", environment={"ambient_c": ambient}), seed=5)
        readings = run(device, 1, 3000)[1000:]
        temps[ambient] = (statistics.mean(r["bearing_temp"] for r in readings),
                          statistics.mean(r["winding_temp"] for r in readings))
    assert temps[35.0][0] - temps[15.0][0] == pytest.approx(20.0, rel=0.1)
    assert temps[35.0][1] - temps[15.0][1] == pytest.approx(20.0, rel=0.1)


def test_units_of_one_model_share_its_design_and_other_models_differ() -> None:
    def healthy_flow(model_name: str, seed: int) -> float:
        device = DeviceModel(DeviceSpec("p", "pump", "s", model=model_name), seed=seed)
        return statistics.mean(r["flow"] for r in run(device, 1, 1500))

    assert ModelProfile.of("pump", "Etanorm 80-250") == ModelProfile.of("pump", "Etanorm 80-250")
    assert ModelProfile.of("pump", "Etanorm 80-250") != ModelProfile.of("pump", "NK 65-200")
    # Two units of one model (different seeds, different load histories) agree on their design constants;
    # a nameless model is the nominal design, so old scenarios replay as they did.
    first = DeviceModel(DeviceSpec("a", "pump", "s", model="NK 65-200"), seed=1)
    second = DeviceModel(DeviceSpec("b", "pump", "t", model="NK 65-200"), seed=2)
    assert first.profile == second.profile and DeviceModel(DeviceSpec("c", "pump", "s"), seed=1).profile == ModelProfile()
    assert healthy_flow("Etanorm 80-250", 1) != healthy_flow("NK 65-200", 1)


def test_a_repair_clears_the_fault_and_the_metrics_recover() -> None:
    device = DeviceModel(DeviceSpec("p", "pump", "s"), seed=9)
    healthy = run(device, 1, 600)
    device.inject(Fault("p", "bearing_wear", onset=600.0, duration=600.0))
    failing = run(device, 600, 1200)
    assert failing[-1]["vibration"] > VIBRATION_LIMIT and failing[-1]["bearing_temp"] > max(r["bearing_temp"] for r in healthy)
    device.repair(1200.0)
    after = run(device, 1200, 2400)
    assert max(r["vibration"] for r in after) < 4.0  # at once: the worn bearing is gone
    # The housing cools through its thermal lag: within a few time constants it is back to normal.
    assert statistics.mean(r["bearing_temp"] for r in after[-300:]) < max(r["bearing_temp"] for r in healthy) + 1.0
    # A fault injected later grows from zero again.
    device.inject(Fault("p", "bearing_wear", onset=2400.0, duration=600.0))
    assert run(device, 2400, 2410)[-1]["vibration"] < 4.0


def test_a_fault_with_an_end_heals_on_its_own() -> None:
    """Cavitation from a clogged strainer stops when it is backflushed: given a ``cleared_at``."""
    device = DeviceModel(DeviceSpec("p", "pump", "s"), seed=4)
    twin = DeviceModel(DeviceSpec("p", "pump", "s"), seed=4)  # the same machine, never faulty
    device.inject(Fault("p", "cavitation", onset=1200.0, duration=300.0, cleared_at=1800.0))
    flows = [(d["flow"], t["flow"]) for d, t in zip(run(device, 1, 3000), run(twin, 1, 3000))]
    assert all(a == b for a, b in flows[:1199])
    assert statistics.mean(a / b for a, b in flows[1600:1799]) < 0.85  # cavitating: less flow
    assert all(a == pytest.approx(b) for a, b in flows[1799:])  # cleared: the healthy machine again


def test_simulators_take_model_and_environment_from_the_gateway_config(tmp_path: Path) -> None:
    document = gateway_document(1883, tmp_path)
    document["sites"][0]["environment"] = {"humidity_pct": 85, "ambient_c": 30, "climate": "coastal"}
    specs = device_specs(parse_config(document, "test"))
    assert specs["pump-01"].model == "Etanorm 80-250"
    assert dict(specs["pump-01"].environment) == {"humidity_pct": 85.0, "ambient_c": 30.0}  # text is not physics
    assert DeviceModel(specs["pump-01"], seed=1).wear_rate > 1.4


def test_the_fleet_repairs_a_device_on_its_control_topic(mosquitto: Mosquitto, tmp_path: Path) -> None:
    truth = tmp_path / "truth.jsonl"
    config = FleetConfig(devices=[DeviceSpec("pump-01", "pump", "north")], port=mosquitto.port, acceleration=50,
                         interval_s=5.0, ground_truth=truth,
                         faults=[Fault("pump-01", "bearing_wear", onset=0.0, duration=300.0)])
    simulator = FleetSimulator(config)
    vibration: list[float] = []
    qos: set[int] = set()

    def received(_client: Any, _userdata: Any, message: mqtt.MQTTMessage) -> None:
        vibration.append(orjson.loads(message.payload)["metrics"]["vibration"])
        qos.add(message.qos)

    listener = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="physics-test")
    listener.on_message = received
    listener.connect("127.0.0.1", mosquitto.port)
    listener.subscribe("plant/north/pump-01/telemetry", qos=1)
    listener.loop_start()
    thread = threading.Thread(target=simulator.run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: vibration and vibration[-1] > VIBRATION_LIMIT, timeout=30, what="the fault to grow")
        publish.single(config.control_topic, orjson.dumps({"device": "pump-01", "repair": True}), qos=1,
                       hostname="127.0.0.1", port=mosquitto.port)
        publish.single(config.control_topic, b'{"device": "pump-01", "repair": "yes"}', qos=1,
                       hostname="127.0.0.1", port=mosquitto.port)  # not a command: ignored, nothing stops
        wait_until(lambda: any(b'"repair"' in line for line in truth.read_bytes().splitlines()), timeout=10,
                   what="the repair in the ground truth")
        seen = len(vibration)
        wait_until(lambda: len(vibration) > seen + 5, timeout=10, what="telemetry after the repair")
        assert max(vibration[seen + 1:]) < 4.0
        assert qos == {1}  # published at QoS 1 by default (a QoS 1 subscription gets the lower of the two)
    finally:
        simulator.stop()
        thread.join(timeout=10)
        listener.loop_stop()
        listener.disconnect()
    rows = [orjson.loads(line) for line in truth.read_bytes().splitlines()]
    assert [row["kind"] for row in rows] == ["bearing_wear", "repair"]
    assert rows[0]["failure_ts"] - rows[0]["onset_ts"] == 300.0 and rows[0]["wear_rate"] == 1.0
    assert time.time() - 60 < rows[1]["at_ts"] < time.time() + 3600
