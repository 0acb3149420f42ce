"""The spine on real parts: simulated fleet -> Mosquitto -> gateway -> work order -> engineer -> REST."""

from __future__ import annotations

import threading
from pathlib import Path

import orjson
import pytest

from gateway.broker import Mosquitto
from gateway.demo import fleet_for
from simulators.mqtt_fleet import FleetSimulator
from simulators.physics import Fault
from tests.conftest import gateway_document, wait_until

ACCELERATION = 100.0
WARMUP_SAMPLES = 1800
FAULT_ONSET_S = 2400.0
FAULT_DURATION_S = 900.0


@pytest.mark.e2e
def test_faulty_pump_gets_one_assigned_work_order_and_healthy_devices_none(
    mosquitto: Mosquitto, tmp_path: Path, start_gateway
) -> None:
    # One detector worker process: the sharded path, as a plant would run it on a multi-core box.
    document = gateway_document(mosquitto.port, tmp_path,
                                detectors={"warmup_samples": WARMUP_SAMPLES, "workers": 1},
                                # The simulated clock runs ahead of the wall clock.
                                ingest={"max_future_skew_s": 366 * 86400})
    gw = start_gateway(document)
    fleet = fleet_for(gw.config, mosquitto.host, mosquitto.port, ACCELERATION, seed=1,
                      ground_truth=tmp_path / "truth.jsonl")
    fleet.faults.append(Fault("pump-02", "bearing_wear", onset=FAULT_ONSET_S, duration=FAULT_DURATION_S))
    # Run on to the failure point, so any false alarm on a healthy device has had its chance.
    fleet.duration_s = FAULT_ONSET_S + FAULT_DURATION_S
    simulator = FleetSimulator(fleet)
    thread = threading.Thread(target=simulator.run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: gw.items("/work-orders", device_id="pump-02"), timeout=120,
                   what="a work order for the faulty pump")
        thread.join(timeout=120)
        assert not thread.is_alive(), "simulator did not finish"
        # Let the pipeline drain what the simulator published last.
        wait_until(lambda: gw.get("/health")["pipeline"]["counts"].get("readings_scored", 0)
                   >= simulator.published * 5 - 50, timeout=30, what="pipeline to drain")
    finally:
        simulator.stop()

    orders = gw.items("/work-orders")
    assert [o["device_id"] for o in orders] == ["pump-02"], orders
    order = gw.get(f"/work-orders/{orders[0]['code']}")

    # Coded, with the device context and the readings that triggered it.
    assert order["code"].startswith("WO-") and len(order["code"]) == len("WO-20261125-0001")
    assert order["failure_mode"] in {"VIB", "OHE", "PDE"}
    assert order["priority"] in {"P1", "P2"}  # high-criticality asset
    asset = order["context"]["asset"]
    assert asset["id"] == "pump-02" and asset["model"] == "Etanorm 80-250" and asset["serial"] == "S2"
    assert asset["site"]["id"] == "north" and asset["criticality"] == "high"
    triggering = order["context"]["triggering_readings"]
    assert triggering and {r["metric"] for r in triggering} >= {"vibration", "bearing_temp"}
    truth = [orjson.loads(line) for line in (tmp_path / "truth.jsonl").read_bytes().splitlines()]
    assert order["last_occurrence_at"] >= truth[0]["onset_ts"]

    # Assigned to the nearest engineer who is qualified: not the closer electrician.
    assert order["state"] == "DISPATCHED"
    assert order["assigned_engineer_id"] == "eng-mechanical"
    assignment = order["assignment"]
    excluded = assignment["excluded"]
    assert excluded["eng-near-electrical"] == "lacks skill mechanical"
    # Carla is in Berlin: she makes the candidate list only when the SLA leaves time to drive there.
    assert excluded.get("eng-far-mechanical", "cannot be on site").startswith("cannot be on site")
    assert assignment["candidates"][0]["engineer_id"] == "eng-mechanical"
    assert assignment["candidates"][0]["grades"]["travel"] > 0.8
    assert [e["kind"] for e in order["events"]][:2] == ["created", "dispatched"]

    # Readings of every device were stored and are served.
    for device in ("pump-01", "pump-02", "motor-01"):
        assert gw.get(f"/devices/{device}/readings/latest")["readings"]
    assert gw.items("/anomalies", device_id="pump-02")
    assert gw.items("/anomalies", device_id="pump-01") == []
    assert gw.get("/health")["connectors"][0]["errors"] == {}
