"""Rules changed without code and without a restart: each live section through the API against a real
gateway and Mosquitto, refusals with every path and reason, revisions, restore, export and import, the
dry run on history, persistence across restarts, and SIGHUP / ``pmgw reload``."""

from __future__ import annotations

import copy
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import yaml

from gateway.broker import Mosquitto
from gateway.config import load_config
from gateway.threaded import GatewayThread
from tests.conftest import RunningGateway, gateway_document, wait_until
from tests.test_auth import PASSWORD, client, sign_in
from tests.test_mqtt_ingest import publish, publisher

VIBRATION_LIMIT = {"device_type": "pump", "metric": "vibration", "high": 7.1, "on_delay": 2, "failure_mode": "VIB"}


def plant(mosquitto: Mosquitto, tmp_path: Path) -> dict[str, Any]:
    document = gateway_document(mosquitto.port, tmp_path)
    document["detectors"]["rules"] = [dict(VIBRATION_LIMIT)]
    return document


def send(mosquitto: Mosquitto, device: str, values: list[dict[str, float]], start: float, site: str = "north") -> None:
    """One reading per second of device time, ending now."""
    client_ = publisher(mosquitto)
    for i, metrics in enumerate(values):
        publish(client_, f"plant/{site}/{device}/telemetry", orjson.dumps({"ts": start + i, "metrics": metrics}))
    client_.loop_stop()


def put(gw: RunningGateway, section: str, value: Any, reason: str = "a test changes it",
        http: httpx.Client | None = None) -> httpx.Response:
    return (http or gw.http).put(f"/config/sections/{section}", json={"value": value, "reason": reason})


def effective(gw: RunningGateway, section: str) -> Any:
    return copy.deepcopy(gw.get(f"/config/sections/{section}")["effective"])


def samples(gw: RunningGateway, device: str) -> int:
    return gw.get(f"/devices/{device}/detector")["samples"]


def test_detector_and_registry_changes_take_effect_on_the_next_reading_and_keep_other_devices_warm(
        mosquitto: Mosquitto, tmp_path: Path, start_gateway) -> None:
    gw = start_gateway(plant(mosquitto, tmp_path))
    now = time.time()
    send(mosquitto, "motor-01", [{"motor_current": 30.0 + 0.1 * (i % 7)} for i in range(40)], now - 100)
    send(mosquitto, "pump-01", [{"vibration": 2.0 + 0.01 * i} for i in range(20)], now - 100)
    wait_until(lambda: samples(gw, "motor-01") >= 40 and samples(gw, "pump-01") >= 20, timeout=15,
               what="both devices scored")
    motor_before = samples(gw, "motor-01")

    # A reliability engineer tightens the pump's vibration limit: the pump keeps its learning, gets new checks;
    # the motor (another type) is untouched.
    detectors = effective(gw, "detectors")
    detectors["rules"] = [VIBRATION_LIMIT | {"high": 5.0}]
    changed = put(gw, "detectors", detectors, "bearing wear seen at 5.5 mm/s on this pump model")
    assert changed.status_code == 200, changed.text
    body = changed.json()
    assert body["changed"] and body["sections"] == ["detectors"] and body["revision"]["source"] == "api"
    assert body["applied"]["detectors"] == {"reset": [], "rechecked": ["pump-01"]}
    assert body["applied"]["connectors_restarted"] == []
    assert "-    high: 7.1" in body["diff"] and "+    high: 5.0" in body["diff"]
    assert samples(gw, "motor-01") == motor_before  # warm: not a new warm-up
    assert samples(gw, "pump-01") >= 20

    # The next readings over 5.0 (under the old 7.1) open a work order: no restart happened.
    send(mosquitto, "pump-01", [{"vibration": 6.0} for _ in range(5)], now - 80)
    orders = wait_until(lambda: gw.items("/work-orders", device_id="pump-01"), timeout=15, what="a work order")
    assert orders[0]["failure_mode"] == "VIB"

    # An admin adds a site and a pump there: its readings are stored and scored at once, connectors untouched.
    sites = effective(gw, "sites") + [{"id": "south", "name": "South plant", "latitude": 48.1, "longitude": 11.6}]
    assert put(gw, "sites", sites).status_code == 200
    assets = effective(gw, "assets") + [{"id": "pump-09", "type": "pump", "model": "Etanorm 80-250", "serial": "S9",
                                         "site": "south", "criticality": "high"}]
    added = put(gw, "assets", assets, "new pump commissioned")
    assert added.status_code == 200, added.text
    assert added.json()["applied"]["connectors_restarted"] == []
    send(mosquitto, "pump-09", [{"vibration": 2.0} for _ in range(5)], now - 60, site="south")
    wait_until(lambda: samples(gw, "pump-09") >= 5, timeout=15, what="the new pump scored")
    assert gw.get("/assets/pump-09")["site"]["id"] == "south"
    assert samples(gw, "motor-01") == motor_before

    # Retiring the pump: it is gone from the registry and from the detectors.
    retired = put(gw, "assets", [a for a in assets if a["id"] != "pump-09"], "pump-09 retired")
    assert retired.json()["applied"]["detectors"]["reset"] == ["pump-09"]
    assert gw.http.get("/assets/pump-09").status_code == 404
    # pump-01 has an open work order: retiring it would orphan the order, so it is refused with the reason.
    kept = put(gw, "assets", [a for a in assets if a["id"] not in ("pump-01", "pump-09")], "pump-01 retired")
    assert kept.status_code == 422
    assert kept.json()["errors"] == [{"field": "assets", "reason": "pump-01 has 1 open work order(s); close or "
                                                                    "cancel them before retiring it"}]


def test_ticketing_roster_and_source_changes_take_effect_on_the_next_finding(
        mosquitto: Mosquitto, tmp_path: Path, start_gateway) -> None:
    gw = start_gateway(plant(mosquitto, tmp_path))
    now = time.time()

    # A supervisor's routing rule: VIB at north is P1, the on-call supervisor is told; templates name the job.
    ticketing = effective(gw, "ticketing")
    ticketing["notices"]["contacts"] = [{"id": "olga", "name": "Olga", "email": "olga@plant.example",
                                         "roles": ["on_call_supervisor"], "sites": ["north"]}]
    ticketing["templates"] = {"bearing": {"title": "Bearing inspection", "instructions": "check the DE bearing",
                                          "parts": ["SKF 6310"]}}
    ticketing["routing"] = [{"name": "VIB at north is urgent", "when": {"sites": ["north"], "failure_modes": ["VIB"]},
                             "then": {"set_priority": "P1", "notify": ["role:on_call_supervisor"],
                                      "template": "bearing", "escalate_after_s": 900,
                                      "escalate_to": ["contact:olga"]}},
                            {"name": "no tickets for the motor's overheating", "when": {"device_types": ["motor"],
                                                                                         "failure_modes": ["OHE"]},
                             "then": {"suppress": True}}]
    # A planner's hard limit: nobody further than 5 minutes away is sent (Anna is ~10 min away).
    ticketing["dispatch"]["max_travel_min"] = 5
    changed = put(gw, "ticketing", ticketing, "night routing and a travel limit")
    assert changed.status_code == 200, changed.text

    send(mosquitto, "pump-01", [{"vibration": 8.0} for _ in range(5)], now - 50)
    order = wait_until(lambda: gw.items("/work-orders", device_id="pump-01"), timeout=15, what="a work order")[0]
    detail = gw.get(f"/work-orders/{order['code']}")
    assert detail["priority"] == "P1" and detail["title"].startswith("Bearing inspection: ")
    assert detail["context"]["routing"]["matched"] == ["VIB at north is urgent"]
    assert detail["context"]["template"]["parts"] == ["SKF 6310"]
    kinds = [event["kind"] for event in detail["events"]]
    assert "routed" in kinds and "escalated" in kinds and "dispatched" not in kinds
    queued = next(e for e in detail["events"] if e["kind"] == "escalated")
    assert "beyond the 5 min travel limit" in str(queued["data"]["excluded"])
    assert detail["assigned_engineer_id"] is None  # the dispatcher queue, not an engineer far away

    # The roster: a dispatcher adds an engineer close by; the next order goes to them.
    dispatcher = client(gw, _user(gw, "dina", "dispatcher"))
    engineers = effective(gw, "engineers") + [{
        "id": "eng-close", "name": "Eve", "skills": ["mechanical"], "home": {"latitude": 53.552, "longitude": 9.992},
        "shift": {"days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"], "start": "00:00", "end": "24:00"}}]
    assert put(gw, "engineers", engineers, "Eve joins the north team", http=dispatcher).status_code == 200
    send(mosquitto, "pump-02", [{"vibration": 8.0} for _ in range(5)], now - 40)
    second = wait_until(lambda: gw.items("/work-orders", device_id="pump-02"), timeout=15, what="a second order")[0]
    assert gw.get(f"/work-orders/{second['code']}")["assigned_engineer_id"] == "eng-close"

    # A source change restarts that connector only, and readings flow again afterwards.
    sources = effective(gw, "sources")
    sources[0]["batch_size"] = 50
    restarted = put(gw, "sources", sources, "smaller batches")
    assert restarted.status_code == 200, restarted.text
    assert restarted.json()["applied"]["connectors_restarted"] == ["test-broker"]
    wait_until(lambda: gw.get("/health")["connectors"][0]["connected"], timeout=15, what="the connector back")
    send(mosquitto, "motor-01", [{"motor_current": 31.0}], time.time() - 1)
    wait_until(lambda: gw.get("/devices/motor-01/readings/latest")["readings"], timeout=15,
               what="a reading through the restarted connector")


def _user(gw: RunningGateway, name: str, role: str) -> str:
    gw.gateway.identities.add_user(name, PASSWORD, role)
    return sign_in(gw, name).json()["access_token"]


def test_an_invalid_change_is_refused_with_every_path_and_reason_and_changes_nothing(
        mosquitto: Mosquitto, tmp_path: Path, start_gateway) -> None:
    gw = start_gateway(plant(mosquitto, tmp_path))
    revisions = gw.get("/config/revisions")["total"]
    assets = effective(gw, "assets")
    broken = assets + [
        {"id": "pump-07", "type": "pump", "serial": "S7", "site": "north"},              # no model
        {"id": "pump-08", "type": "pump", "model": "X", "serial": "S8", "site": "west"},  # unknown site
        dict(assets[0]),                                                                   # duplicate id
    ]
    refused = put(gw, "assets", broken)
    assert refused.status_code == 422 and refused.headers["content-type"] == "application/problem+json"
    errors = {(e["field"], e["reason"]) for e in refused.json()["errors"]}
    fields = {field for field, _ in errors}
    assert "assets[3].model" in fields  # the schema's problem...
    assert "assets[4].site" in fields and "assets[5].id" in fields  # ...and the cross-references, at once
    assert any("unknown site 'west'" in reason for _, reason in errors)
    # Nothing changed: no revision, the section as it was, the check endpoint says the same without applying.
    assert gw.get("/config/revisions")["total"] == revisions
    assert effective(gw, "assets") == assets
    checked = gw.http.post("/config/sections/assets/validate", json={"value": broken}).json()
    assert not checked["valid"] and {p["field"] for p in checked["problems"]} == fields

    # What only a restart changes is refused at run time, with the reason.
    ticketing = effective(gw, "ticketing")
    ticketing["database_url"] = f"sqlite:///{tmp_path / 'other.db'}"
    moved = put(gw, "ticketing", ticketing)
    assert moved.status_code == 422 and "only changes at a restart" in moved.json()["errors"][0]["reason"]

    # A rule naming a device type no asset has, and a template nobody defined.
    ticketing = effective(gw, "ticketing")
    ticketing["routing"] = [{"name": "x", "when": {"device_types": ["turbine"]}, "then": {"template": "nope"}}]
    wrong = put(gw, "ticketing", ticketing).json()["errors"]
    assert {e["field"] for e in wrong} == {"ticketing.routing[0].when.device_types", "ticketing.routing[0].then.template"}
    # A time zone naming a folder of the zone database, or too long to be a file name, is a 422, not a 500
    # (found by the API fuzz test: ZoneInfo raises OSError for these).
    for zone in ("America", "x" * 300):
        tried = gw.http.post("/config/routing/test", json={
            "rules": [{"name": "night", "when": {"timezone": zone}, "then": {"set_priority": "P1"}}],
            "examples": [{"priority": "P3", "site": "north", "device_type": "pump", "failure_mode": "VIB"}]})
        assert tried.status_code == 422 and "unknown time zone" in tried.text, tried.text

    # Roles: a dispatcher may not touch detectors, a reliability engineer may; a viewer changes nothing.
    detectors = effective(gw, "detectors")
    detectors["rules"] = [VIBRATION_LIMIT | {"high": 6.5}]
    dispatcher = client(gw, _user(gw, "dina", "dispatcher"))
    assert put(gw, "detectors", detectors, http=dispatcher).status_code == 403
    viewer = client(gw, _user(gw, "vic", "viewer"))
    assert put(gw, "detectors", detectors, http=viewer).status_code == 403
    reliability = client(gw, _user(gw, "rita", "reliability_engineer"))
    done = put(gw, "detectors", detectors, "6.5 is the OEM's alarm value", http=reliability)
    assert done.status_code == 200 and done.json()["revision"]["author"] == "rita"  # the signed-in principal
    # Names of people are not shown to the role that sees engineers under pseudonyms.
    assert all(e["name"] == "********" for e in reliability.get("/config/sections/engineers").json()["effective"])


def test_revisions_restore_export_and_import(mosquitto: Mosquitto, tmp_path: Path, start_gateway) -> None:
    gw = start_gateway(plant(mosquitto, tmp_path))
    first = gw.get("/config")["revision"]
    assert first["source"] == "file" and gw.get("/config")["runtime_changes"] is False
    detectors = effective(gw, "detectors")
    detectors["rules"] = [VIBRATION_LIMIT | {"high": 5.0}]
    second = put(gw, "detectors", detectors, "tighter").json()["revision"]
    assert gw.get("/config")["runtime_changes"] is True

    listed = gw.get("/config/revisions")
    assert [r["number"] for r in listed["items"]] == [second["number"], first["number"]]  # newest first
    detail = gw.get(f"/config/revisions/{second['number']}")
    assert detail["author"].startswith("key:") and detail["reason"] == "tighter" and "+    high: 5.0" in detail["diff"]

    restored = gw.http.post(f"/config/revisions/{first['number']}/restore", json={"reason": "back to the OEM value"})
    assert restored.status_code == 200, restored.text
    assert restored.json()["revision"]["restored_from"] == first["number"]
    assert effective(gw, "detectors")["rules"][0]["high"] == 7.1

    exported = gw.http.get("/config/export")
    assert exported.headers["content-type"].startswith("application/yaml")
    document = yaml.safe_load(exported.text)
    assert document["sources"][0]["name"] == "test-broker"
    document["detectors"]["rules"] = [VIBRATION_LIMIT | {"high": 6.0}]
    imported = gw.http.post("/config/import", json={"yaml": yaml.safe_dump(document), "reason": "from git"})
    assert imported.status_code == 200, imported.text
    assert imported.json()["revision"]["source"] == "import" and imported.json()["sections"] == ["detectors"]
    assert effective(gw, "detectors")["rules"][0]["high"] == 6.0

    # An import that differs where only a restart helps is refused, whole.
    document["api"]["port"] = document["api"]["port"] + 1
    document["detectors"]["rules"] = [VIBRATION_LIMIT | {"high": 4.0}]
    refused = gw.http.post("/config/import", json={"yaml": yaml.safe_dump(document), "reason": "port"})
    assert refused.status_code == 422 and refused.json()["errors"][0]["field"] == "api"
    assert effective(gw, "detectors")["rules"][0]["high"] == 6.0
    broken = gw.http.post("/config/import", json={"yaml": "sites: [\n", "reason": "typo"})
    assert broken.status_code == 422 and "YAML syntax error" in broken.text


def test_a_dry_run_of_a_tightened_threshold_names_the_work_orders_it_would_add(
        mosquitto: Mosquitto, tmp_path: Path, start_gateway) -> None:
    gw = start_gateway(plant(mosquitto, tmp_path))
    start = time.time() - 3600
    # pump-01 peaks at 6.2 for a while (under the 7.1 limit in force); pump-02 stays at 3.
    send(mosquitto, "pump-01", [{"vibration": 6.2 if 100 <= i < 130 else 2.5} for i in range(300)], start)
    send(mosquitto, "pump-02", [{"vibration": 3.0} for _ in range(300)], start)
    wait_until(lambda: samples(gw, "pump-01") >= 300 and samples(gw, "pump-02") >= 300, timeout=20,
               what="the history stored and scored")
    assert gw.items("/work-orders") == []
    revisions = gw.get("/config/revisions")["total"]

    detectors = effective(gw, "detectors")
    detectors["rules"] = [VIBRATION_LIMIT | {"high": 5.0}]
    run = gw.http.post("/config/dry-run", json={"section": "detectors", "value": detectors, "days": 1})
    assert run.status_code == 200, run.text
    result = run.json()
    assert result["replayed"] == "readings" and result["readings"] == 600
    assert [(o["device_id"], o["failure_mode"]) for o in result["would_open"]] == [("pump-01", "VIB")]
    assert result["would_open"][0]["engineer_id"] == "eng-mechanical"
    assert start + 100 <= result["would_open"][0]["opened_at"] <= start + 110
    assert result["would_not_open"] == [] and result["current"]["work_orders"] == 0
    # A dry run applies nothing.
    assert gw.get("/config/revisions")["total"] == revisions and gw.items("/work-orders") == []
    assert effective(gw, "detectors")["rules"][0]["high"] == 7.1

    # A dispatch change tried on the same history: who would have gone.
    ticketing = effective(gw, "ticketing")
    ticketing["dispatch"]["max_travel_min"] = 1
    tried = gw.http.post("/config/dry-run", json={"section": "ticketing", "value": ticketing, "days": 1}).json()
    assert tried["replayed"] == "findings" and tried["would_open"] == [] and tried["changed"] == []


def test_runtime_revisions_persist_across_restarts_until_the_file_changes(mosquitto: Mosquitto, tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(plant(mosquitto, tmp_path)))

    def started() -> tuple[GatewayThread, httpx.Client]:
        config = load_config(path)
        thread = GatewayThread(config, path).start()
        _, key = thread.gateway.identities.create_key(f"t{time.monotonic()}", "admin", "tests")
        http = httpx.Client(base_url=f"http://127.0.0.1:{config.api.port}/api/v1", timeout=10,
                            headers={"Authorization": f"Bearer {key}"})
        wait_until(lambda: _answers(http), timeout=20, what="the API")
        return thread, http

    thread, http = started()
    detectors = http.get("/config/sections/detectors").json()["effective"]
    detectors["rules"] = [VIBRATION_LIMIT | {"high": 5.0}]
    made = http.put("/config/sections/detectors", json={"value": detectors, "reason": "tighter"}).json()["revision"]
    thread.stop()

    thread, http = started()  # the same file: the runtime revision is still in force, and says so
    status = http.get("/config").json()
    assert status["revision"]["number"] == made["number"] and status["runtime_changes"] is True
    assert thread.gateway.config.detectors.rules[0].high == 5.0
    thread.stop()

    document = yaml.safe_load(path.read_text())
    document["detectors"]["rules"] = [VIBRATION_LIMIT | {"high": 6.0}]
    path.write_text(yaml.safe_dump(document))
    thread, http = started()  # the file changed: it wins, and the revision it took over from is named
    status = http.get("/config").json()
    assert status["revision"]["source"] == "file" and status["superseded"] == [made["number"]]
    assert thread.gateway.config.detectors.rules[0].high == 6.0
    thread.stop()


def _answers(http: httpx.Client) -> bool:
    try:
        return http.get("/health").status_code == 200
    except httpx.HTTPError:
        return False


def test_sighup_and_pmgw_reload_reread_the_file(mosquitto: Mosquitto, tmp_path: Path, gateway_process) -> None:
    document = plant(mosquitto, tmp_path)
    gateway = gateway_process(document, tmp_path).start()
    gateway.process.send_signal(signal.SIGHUP)  # the file is unchanged: nothing happens, the gateway goes on
    time.sleep(0.5)
    assert gateway.process.poll() is None

    document["detectors"]["rules"] = [VIBRATION_LIMIT | {"high": 5.0}]
    gateway.config.write_text(yaml.safe_dump(document))
    reload = subprocess.run([sys.executable, "-m", "gateway.cli", "reload", "--config", str(gateway.config)],
                            capture_output=True, text=True, timeout=60)
    assert reload.returncode == 0 and "in force: detectors" in reload.stdout, reload.stdout + reload.stderr
    assert not [p for p in gateway.health()["problems"] if "configuration" in p] and gateway.process.poll() is None
    assert httpx.get(f"{gateway.api}/health/ready", timeout=5).json() == {"ready": True, "reasons": []}
    assert httpx.get(f"{gateway.api}/health/live", timeout=5).status_code == 200

    # A broken file: `pmgw reload` refuses before signalling; a bare SIGHUP keeps what runs and says why.
    document["assets"][0]["site"] = "atlantis"
    gateway.config.write_text(yaml.safe_dump(document))
    refused = subprocess.run([sys.executable, "-m", "gateway.cli", "reload", "--config", str(gateway.config)],
                             capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and "unknown site 'atlantis'" in refused.stderr
    gateway.process.send_signal(signal.SIGHUP)
    wait_until(lambda: any("reload of the configuration file was refused" in p
                           for p in gateway.health().get("problems", [])), timeout=10, what="the refusal in /health")
    gateway.terminate()


def test_two_editors_never_overwrite_each_other_unseen(mosquitto: Mosquitto, tmp_path: Path, start_gateway) -> None:
    gw = start_gateway(plant(mosquitto, tmp_path))
    seen = gw.get("/config")["revision"]["number"]
    detectors = effective(gw, "detectors")
    detectors["rules"] = [VIBRATION_LIMIT | {"high": 6.0}]
    first = gw.http.put("/config/sections/detectors", json={"value": detectors, "reason": "first editor",
                                                            "base_revision": seen})
    assert first.status_code == 200
    detectors["rules"] = [VIBRATION_LIMIT | {"high": 4.0}]
    second = gw.http.put("/config/sections/detectors", json={"value": detectors, "reason": "second editor",
                                                             "base_revision": seen})
    assert second.status_code == 409 and "changed meanwhile" in second.json()["detail"]
    assert effective(gw, "detectors")["rules"][0]["high"] == 6.0
