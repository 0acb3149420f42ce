"""The REST API's answers to good and bad requests, and the simulate and demo commands."""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import orjson
import paho.mqtt.client as mqtt
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from gateway.broker import Mosquitto
from tests.conftest import gateway_document, wait_until

ROOT = Path(__file__).resolve().parent.parent
PMGW = [sys.executable, "-m", "gateway.cli"]


def test_api_resources_and_invalid_requests(mosquitto: Mosquitto, tmp_path: Path, start_gateway) -> None:
    gw = start_gateway(gateway_document(mosquitto.port, tmp_path))
    assert [a["id"] for a in gw.items("/assets")] == ["pump-01", "pump-02", "motor-01"]
    assert gw.get("/assets/pump-01")["site"] == {"id": "north", "name": "North plant", "environment": {},
                                                 "latitude": 53.55, "longitude": 9.99}
    engineers = {e["id"]: e for e in gw.items("/engineers")}
    assert engineers["eng-mechanical"]["on_shift"] is True
    assert engineers["eng-mechanical"]["open_work_orders"] == 0
    health = gw.get("/health")
    assert health["connectors"][0]["connected"] is True
    assert health["status"] == "degraded"  # connected, but no device has reported yet
    assert "/api/v1/work-orders/{code}" in httpx.get(f"{gw.url}/openapi.json").json()["paths"]
    assert httpx.get(f"{gw.url}/docs").status_code == 200
    assert httpx.get(f"{gw.url}/health").json()["status"] == "degraded"  # the monitors' alias

    # Errors are RFC 9457 problem details.
    not_found = gw.http.get("/assets/pump-99")
    assert not_found.status_code == 404 and not_found.headers["content-type"] == "application/problem+json"
    assert not_found.json() == {"type": "about:blank", "title": "Not Found", "status": 404,
                                "detail": "no asset 'pump-99'", "instance": "/api/v1/assets/pump-99"}
    assert gw.http.get("/devices/pump-99/readings/latest").status_code == 404
    assert gw.http.get("/work-orders/WO-19990101-0001").json()["detail"] == "no work order 'WO-19990101-0001'"
    bad_priority = gw.http.get("/work-orders", params={"priority": "urgent"})
    assert bad_priority.status_code == 422
    assert bad_priority.json()["errors"][0]["field"] == "query.priority"
    assert "query.priority" in bad_priority.json()["detail"]
    window = gw.http.get("/devices/pump-01/readings", params={"since": 200, "until": 100})
    assert (window.status_code, window.json()["detail"]) == (422, "'since' must not be after 'until'")
    assert gw.http.get("/anomalies", params={"limit": 0}).status_code == 422
    # A filter the endpoint does not have is refused, not ignored (it used to return everything).
    unknown = gw.http.get("/work-orders", params={"failuremode": "VIB"})
    assert unknown.status_code == 400 and "unknown query parameter(s) failuremode" in unknown.json()["detail"]
    bad_body = gw.http.post("/work-orders", json={"device_id": "pump-01", "failure_mode": "NOI", "title": "x"})
    assert bad_body.status_code == 422 and bad_body.json()["errors"][0]["field"] == "body.title"
    backwards = gw.http.post("/work-orders", json={"device_id": "pump-01", "failure_mode": "NOI", "title": "noise",
                                                   "appointment": {"start": 2e9, "end": 1e9}})
    assert backwards.status_code == 422 and "an appointment ends after it starts" in backwards.json()["detail"]


def test_simulate_command_publishes_every_asset_of_a_config(mosquitto: Mosquitto, tmp_path: Path) -> None:
    config = tmp_path / "plant.yaml"
    config.write_text(yaml.safe_dump(gateway_document(mosquitto.port, tmp_path)))
    received: dict[str, list[int]] = {}
    client = mqtt.Client(CallbackAPIVersion.VERSION2)
    client.on_message = lambda c, u, m: received.setdefault(m.topic, []).append(orjson.loads(m.payload)["seq"])
    client.connect(mosquitto.host, mosquitto.port)
    client.subscribe("plant/#", qos=1)
    client.loop_start()
    time.sleep(0.5)
    truth = tmp_path / "truth.jsonl"
    result = subprocess.run(
        [*PMGW, "simulate", "--config", str(config), "--acceleration", "0", "--duration", "20",
         "--fault", "pump-02:overheating:at=5:duration=10", "--ground-truth", str(truth)],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "published 60 messages" in result.stdout
    wait_until(lambda: sum(map(len, received.values())) >= 60, timeout=10, what="simulated messages")
    client.loop_stop()
    assert sorted(received) == [
        "plant/north/motor-01/telemetry", "plant/north/pump-01/telemetry", "plant/north/pump-02/telemetry",
    ]
    assert all(seqs == list(range(1, 21)) for seqs in received.values())
    fault = orjson.loads(truth.read_bytes())
    assert (fault["device_id"], fault["kind"], fault["onset"], fault["duration"]) == ("pump-02", "overheating", 5, 10)

    bad = subprocess.run([*PMGW, "simulate", "--config", str(config), "--fault", "pump-02:melting"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2
    assert "unknown fault 'melting'; known: bearing_wear, overheating, cavitation" in bad.stderr


def test_demo_opens_one_work_order_for_the_faulty_pump(tmp_path: Path) -> None:
    result = subprocess.run(
        [*PMGW, "demo", "--data-dir", str(tmp_path / "demo"), "--port", "0", "--acceleration", "100",
         "--healthy", "25", "--duration", "45"],
        capture_output=True, text=True, timeout=180, env=os.environ | {"PYTHONUNBUFFERED": "1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    # The dashboard's address comes first, then a sign-in for every role.
    lines = result.stdout.splitlines()
    assert lines[0] == "pm-gateway demo" and re.fullmatch(r"  dashboard  http://127\.0\.0\.1:\d+/  \(sign in.*", lines[1])
    sign_ins = lines.index("Sign-ins (POST /oauth/token, grant_type=password; passwords are new every run):")
    roles = [line.split()[0] for line in lines[sign_ins + 1:sign_ins + 6]]
    assert roles == ["viewer", "technician", "dispatcher", "reliability_engineer", "admin"]
    assert "Injected bearing_wear into pump-02" in result.stdout
    opened = [line for line in result.stdout.splitlines() if line.startswith(">>> Work order")]
    assert len(opened) == 1 and "opened for pump-02" in opened[0] and "assigned to eng-anna" in opened[0]
    assert (tmp_path / "demo" / "ground_truth.jsonl").exists()
    with sqlite3.connect(tmp_path / "demo" / "workorders.db") as db:
        assert db.execute("SELECT device_id, assigned_engineer_id FROM work_orders").fetchall() == [
            ("pump-02", "eng-anna")
        ]


def test_offers_are_accepted_declined_and_re_optimised_over_rest(
    mosquitto: Mosquitto, tmp_path: Path, start_gateway
) -> None:
    gw = start_gateway(gateway_document(mosquitto.port, tmp_path))
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="api-test")
    client.connect(mosquitto.host, mosquitto.port)
    client.loop_start()
    alarm = {"code": "VIB", "severity": "high", "message": "shaking"}
    client.publish("plant/north/motor-01/alarm", orjson.dumps(alarm), qos=1).wait_for_publish(5)
    orders = wait_until(lambda: gw.items("/work-orders", device_id="motor-01"), timeout=10, what="the work order")
    code = orders[0]["code"]
    order = gw.get(f"/work-orders/{code}")
    assert order["assigned_engineer_id"] == "eng-mechanical" and order["sla"]["policy"] == "P2/medium"
    assert order["assignment"]["candidates"][0]["grades"]["travel"] > 0.8

    assert gw.http.post(f"/work-orders/{code}/accept", json={"engineer_id": "eng-near-electrical"}).status_code == 409
    assert gw.http.post(f"/work-orders/{code}/accept", json={"engineer_id": "nobody"}).status_code == 404
    assert gw.http.post(f"/work-orders/{code}/decline", json={"engineer_id": "eng-mechanical"}).status_code == 422

    # Carla (home in Berlin) is on a job next door: her last known location makes her the better choice.
    moved = gw.http.put("/engineers/eng-far-mechanical/location", json={"latitude": 53.551, "longitude": 9.99})
    assert moved.status_code == 200 and moved.json()["latitude"] == 53.551
    assert gw.http.put("/engineers/eng-far-mechanical/location", json={"latitude": 95, "longitude": 0}).status_code == 422
    assert gw.http.post("/dispatch/reoptimise").json() == {"reassigned": [code]}
    assert gw.get(f"/work-orders/{code}")["assigned_engineer_id"] == "eng-far-mechanical"

    declined = gw.http.post(f"/work-orders/{code}/decline",
                            json={"engineer_id": "eng-far-mechanical", "reason": "van in the workshop"}).json()
    assert declined["assigned_engineer_id"] == "eng-mechanical" and declined["declined_by"] == ["eng-far-mechanical"]
    accepted = gw.http.post(f"/work-orders/{code}/accept", json={"engineer_id": "eng-mechanical"}).json()
    assert accepted["accepted_at"] is not None and accepted["sla"]["clocks"]["respond"]["met_at"] is not None
    engineers = {e["id"]: e for e in gw.items("/engineers")}
    assert engineers["eng-far-mechanical"]["last_known_location"]["latitude"] == 53.551
    assert engineers["eng-mechanical"]["open_work_orders"] == 1
    assert engineers["eng-mechanical"]["skill_levels"] == {"mechanical": 3}

    # Everyone qualified says no: the dispatcher queue.
    second = gw.http.post("/work-orders", json={"device_id": "pump-01", "failure_mode": "NOI", "title": "noise"}).json()
    for engineer in ("eng-far-mechanical", "eng-mechanical"):
        answer = gw.http.post(f"/work-orders/{second['code']}/decline", json={"engineer_id": engineer, "reason": "no"})
        assert answer.status_code == 200, answer.text
    queued = gw.get(f"/work-orders/{second['code']}")
    assert (queued["state"], queued["assigned_engineer_id"]) == ("DIAGNOSED", None)
    assert queued["events"][-1]["kind"] == "escalated"
    client.loop_stop()


def test_manual_work_orders_and_asset_states_over_rest(mosquitto: Mosquitto, tmp_path: Path, start_gateway) -> None:
    gw = start_gateway(gateway_document(mosquitto.port, tmp_path))
    request = {"device_id": "pump-01", "failure_mode": "NOI", "title": "grinding noise at start-up",
               "description": "heard on the night round"}
    # Nobody claims to be somebody else: the actor is the signed-in caller.
    assert gw.http.post("/work-orders", json=request | {"actor": "operator-7"}).status_code == 422
    created = gw.http.post("/work-orders", json=request)
    assert created.status_code == 201
    order = created.json()
    key_id = gw.admin_key.split("_")[1]
    assert {e["actor"] for e in order["events"] if e["kind"] == "created"} == {f"key:{key_id}"}
    assert order["origin"] == "manual" and order["assigned_engineer_id"] == "eng-mechanical"
    assert gw.http.post("/work-orders", json=request | {"device_id": "pump-99"}).status_code == 404
    assert gw.http.post("/work-orders", json=request | {"failure_mode": "noise"}).status_code == 422

    put = gw.http.put("/assets/pump-02/state", json={"state": "maintenance", "reason": "bearing change"})
    assert put.status_code == 200 and put.json()["suppresses_tickets"] is True
    assert gw.get("/assets/pump-02")["operating_state"]["state"] == "maintenance"
    refused = gw.http.post("/work-orders", json=request | {"device_id": "pump-02"})
    assert (refused.status_code, refused.json()["detail"]) == (
        409, "pump-02 is in maintenance: no tickets until it operates")
    assert gw.http.put("/assets/pump-02/state", json={"state": "broken", "reason": "x"}).status_code == 422
    gw.http.put("/assets/pump-02/state", json={"state": "operating", "reason": "done"})
    assert gw.http.post("/work-orders", json=request | {"device_id": "pump-02"}).status_code == 201
    # Lists come in pages with the total.
    first = gw.get("/work-orders", limit=1)
    second = gw.get("/work-orders", limit=1, offset=1)
    assert (first["total"], first["limit"], first["offset"], len(first["items"])) == (2, 1, 0, 1)
    assert first["items"][0]["device_id"] == "pump-02" and second["items"][0]["device_id"] == "pump-01"
    assert gw.get("/assets", limit=2, offset=2)["items"][0]["id"] == "motor-01"
