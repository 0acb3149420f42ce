"""Signed webhooks from the durable outbox, against real HTTP receivers on loopback: signatures checked
with the standardwebhooks library, bodies against the served JSON Schemas, every event delivered
once by id and in order per work order, through a receiver outage and a kill -9 of the gateway."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import orjson
import paho.mqtt.publish as mqtt_publish
import pytest
from standardwebhooks import Webhook

from gateway.broker import Mosquitto, free_port
from tests.conftest import chain_parts, gateway_document, wait_until
from ticketing.config import TicketingConfig
from ticketing.lifecycle import State
from ticketing.outbox import DEAD, DELIVERED, PENDING
from ticketing.service import TicketingService

SCHEDULE = {"retry_schedule_s": [0.25] * 40, "poll_interval_s": 0.05}


class Receiver:
    """An HTTP endpoint that keeps what it is sent; ``status`` is what it answers (503: down)."""

    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.answer: Any = None  # when set: body -> the status to answer
        self.received: list[tuple[int, dict[str, str], bytes]] = []  # (status answered, headers, body)
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the http.server API
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                status = receiver.answer(body) if receiver.answer else receiver.status
                receiver.received.append((status, {k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def accepted(self) -> list[tuple[dict[str, str], bytes]]:
        return [(headers, body) for status, headers, body in self.received if 200 <= status < 300]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receivers() -> Any:
    made: list[Receiver] = []

    def make(status: int = 200) -> Receiver:
        made.append(Receiver(status))
        return made[-1]

    yield make
    for receiver in made:
        receiver.close()


def verified(receiver: Receiver, secret: str) -> list[dict[str, Any]]:
    """Every accepted delivery, its signature checked by the Standard Webhooks library."""
    hook = Webhook(secret)
    events = []
    for headers, body in receiver.accepted():
        event = hook.verify(body, headers)
        assert headers["webhook-id"] == event["id"] and headers["content-type"] == "application/cloudevents+json"
        events.append(event)
    return events


def test_events_reach_a_receiver_signed_once_each_in_order_through_an_outage(
    mosquitto: Mosquitto, tmp_path: Path, start_gateway, receivers
) -> None:
    gw = start_gateway(gateway_document(mosquitto.port, tmp_path, webhooks=SCHEDULE | {"disable_after_s": 1.5}))
    main, broken = receivers(503), receivers(500)  # the main receiver is down for now; the other always fails
    created = gw.http.post("/webhooks", json={"url": main.url})
    assert created.status_code == 201, created.text
    secret, subscription = created.json()["secret"], created.json()["id"]
    assert secret.startswith("whsec_") and "secret" not in gw.get(f"/webhooks/{subscription}")
    # Kept sealed with a key of the keyring: the database alone does not give the secret away.
    with sqlite3.connect(tmp_path / "workorders.db") as db:
        [(stored,)] = db.execute("SELECT secret FROM webhook_subscriptions WHERE id = ?", (subscription,)).fetchall()
    assert stored.startswith("sealed:") and secret not in stored and secret.removeprefix("whsec_") not in stored
    assert gw.http.post("/webhooks", json={"url": main.url, "types": ["pmgw.nothing"]}).status_code == 422
    failing = gw.http.post("/webhooks", json={"url": broken.url, "types": ["pmgw.workorder.*"]}).json()["id"]

    # Work happens while the receiver is down: a manual order walked a few steps, and a device alarm.
    order = gw.http.post("/work-orders", json={"device_id": "pump-01", "failure_mode": "NOI", "title": "noise"}).json()
    code = order["code"]
    gw.http.post(f"/work-orders/{code}/accept", json={"engineer_id": order["assigned_engineer_id"]})
    for step in ("EN_ROUTE", "ON_SITE", "IN_PROGRESS"):
        assert gw.http.post(f"/work-orders/{code}/transitions", json={"to": step}).status_code == 200
    mqtt_publish.single("plant/north/motor-01/alarm", orjson.dumps(
        {"code": "OHE", "severity": "high", "message": "winding hot", "active": True}), qos=1,
        hostname="127.0.0.1", port=mosquitto.port)
    wait_until(lambda: len([r for r in main.received if r[0] == 503]) >= 3, timeout=15, what="failed attempts")
    main.status = 200

    chain = lambda c: [e["hash"] for e in gw.get(f"/work-orders/{c}")["events"]]  # noqa: E731
    motor = wait_until(lambda: gw.items("/work-orders", device_id="motor-01"), timeout=10, what="the alarm's order")
    expected = set(chain(code)) | set(chain(motor[0]["code"]))
    wait_until(lambda: expected <= {e["id"] for e in verified(main, secret)} and gw.get(
        f"/webhooks/{subscription}/deliveries", state="pending")["total"] == 0, timeout=20, what="every event delivered")
    events = verified(main, secret)
    ids = [e["id"] for e in events]
    assert len(ids) == len(set(ids)), "an event was delivered twice"
    # In order per work order: exactly the order of its chain.
    assert [e["id"] for e in events if e["subject"] == code] == chain(code)
    types = {e["type"] for e in events}
    assert {"pmgw.workorder.created", "pmgw.workorder.dispatched", "pmgw.workorder.accepted",
            "pmgw.workorder.in_progress", "pmgw.alarm.raised"} <= types
    for event in events:
        served = gw.get(f"/event-types/{event['type']}/schema")
        jsonschema.validate(event, served, format_checker=jsonschema.FormatChecker())
    alarm = next(e for e in events if e["type"] == "pmgw.alarm.raised")
    assert alarm["data"]["work_order_code"] == motor[0]["code"] and alarm["data"]["site_id"] == "north"

    log = gw.get(f"/webhooks/{subscription}/deliveries", limit=1000)
    assert log["total"] == len(ids) and {d["state"] for d in log["items"]} == {DELIVERED}
    first = min(log["items"], key=lambda d: d["id"])
    assert first["attempts"] >= 2 and first["last_status"] == 200 and first["last_latency_ms"] is not None

    # The receiver that never answers well is disabled after failing 1.5 s, and an event says so.
    wait_until(lambda: not gw.get(f"/webhooks/{failing}")["enabled"], timeout=20, what="the failing one disabled")
    assert "every delivery failed" in gw.get(f"/webhooks/{failing}")["disabled_reason"]
    disabled = wait_until(lambda: [e for e in verified(main, secret) if e["type"] == "pmgw.webhook.disabled"],
                          timeout=10, what="the disabled event")
    assert disabled[0]["data"]["subscription_id"] == failing

    # A manual redelivery sends one event again, now.
    again = gw.http.post(f"/webhooks/{subscription}/deliveries/{first['id']}/redeliver")
    assert again.status_code == 200 and again.json()["state"] == PENDING
    wait_until(lambda: [e["id"] for e in verified(main, secret)].count(first["event_id"]) == 2, timeout=10,
               what="the redelivery")


def test_a_kill_9_during_retries_loses_no_event(mosquitto: Mosquitto, tmp_path: Path, gateway_process,
                                               receivers) -> None:
    receiver = receivers(503)
    document = gateway_document(mosquitto.port, tmp_path, webhooks=SCHEDULE)
    gateway = gateway_process(document, tmp_path)
    created = subprocess.run([sys.executable, "-m", "gateway.cli", "keys", "create", "tests", "--role", "admin",
                              "--config", str(gateway.config)], capture_output=True, text=True, timeout=60)
    key = created.stdout.strip().splitlines()[-1]
    gateway.start()
    api = httpx.Client(base_url=f"{gateway.api}/api/v1", headers={"Authorization": f"Bearer {key}"}, timeout=10)
    secret = api.post("/webhooks", json={"url": receiver.url, "types": ["pmgw.workorder.*"]}).json()["secret"]
    codes = []
    for device in ("pump-01", "pump-02", "motor-01"):
        order = api.post("/work-orders", json={"device_id": device, "failure_mode": "NOI", "title": "noise"}).json()
        codes.append(order["code"])
        api.post(f"/work-orders/{order['code']}/transitions", json={"to": "CANCELLED", "reason": "duplicate call"})
    wait_until(lambda: len(receiver.received) >= 4, timeout=15, what="attempts against the receiver that is down")
    deliverer = api.get("/health").json()["webhooks"]["process"]["pid"]
    gateway.kill()  # mid-retry: what sits in memory is gone, the outbox is not
    # Its delivery process does not outlive it (it would deliver beside the next one).
    wait_until(lambda: _ended(deliverer), timeout=15, what="the delivery process to end with the gateway")
    gateway.start()
    receiver.status = 200
    expected = {e["hash"] for c in codes for e in api.get(f"/work-orders/{c}").json()["events"]}
    wait_until(lambda: expected <= {e["id"] for e in verified(receiver, secret)}, timeout=30,
               what="every event after the restart")
    ids = [e["id"] for e in verified(receiver, secret)]
    print(f"webhooks across kill -9: {len(expected)} events, {len(receiver.received)} attempts, "
          f"{len(ids)} accepted, {len(ids) - len(set(ids))} twice")
    # Exactly once, as far as the gateway knows: a delivery whose answer the kill interrupted may come
    # again (receivers drop it by webhook-id); everything the gateway recorded as delivered, once.
    assert set(ids) == expected
    api.close()
    gateway.terminate()


def _ended(pid: int) -> bool:
    try:  # gone, or a zombie nobody reaped yet: either way it does nothing any more
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_the_delivery_process_starts_with_a_subscription_and_a_killed_one_is_replaced_losing_nothing(
    mosquitto: Mosquitto, tmp_path: Path, start_gateway, receivers
) -> None:
    gw = start_gateway(gateway_document(mosquitto.port, tmp_path, webhooks=SCHEDULE))
    process = lambda: gw.get("/health")["webhooks"]["process"]  # noqa: E731
    assert process()["starts"] == 0 and not process()["running"]  # nothing subscribed: no process
    receiver = receivers()
    secret = gw.http.post("/webhooks", json={"url": receiver.url, "types": ["pmgw.workorder.*"]}).json()["secret"]
    first = wait_until(lambda: process()["ready"] and process(), timeout=30, what="the delivery process")
    os.kill(first["pid"], signal.SIGKILL)
    # Events made while it is dead wait in the outbox; /health says why they do not go.
    order = gw.http.post("/work-orders", json={"device_id": "pump-01", "failure_mode": "NOI", "title": "noise"}).json()
    problems = wait_until(lambda: [p for p in gw.get("/health")["problems"] if p.startswith("webhooks:")], timeout=10,
                          what="the exit in /health")
    assert f"pid {first['pid']}) ended with exit code -9" in problems[0]
    assert "the outbox keeps every event" in problems[0]
    chain = [e["hash"] for e in gw.get(f"/work-orders/{order['code']}")["events"]]
    wait_until(lambda: [e["id"] for e in verified(receiver, secret)] == chain, timeout=30,
               what="the events made meanwhile, delivered by the new process")
    again = process()
    assert again["running"] and again["pid"] != first["pid"] and again["starts"] == 2 and again["exits"] == 1
    # Counted across processes (each reports its own every quarter second).
    wait_until(lambda: gw.get("/health")["webhooks"]["delivered"] >= len(chain), timeout=5, what="the count")


def test_gateways_sharing_a_work_order_database_deliver_each_event_once_and_take_over(
    mosquitto: Mosquitto, tmp_path: Path, start_gateway, receivers
) -> None:
    """A cluster's gateways share one outbox (PostgreSQL): one delivery process delivers it, the other stands
    by, and takes over when the first gateway stops."""
    from tests.servers import PostgreSQL

    server = PostgreSQL().start()
    try:
        gateways = []
        for name in ("first", "second"):
            directory = tmp_path / name
            directory.mkdir()
            document = gateway_document(mosquitto.port, directory, webhooks=SCHEDULE,
                                        ticketing={"database_url": server.url},
                                        auth={"keyring_file": str(tmp_path / "gateway.key")})
            document["sources"][0]["client_id"] = f"pmgw-{name}"
            gateways.append(start_gateway(document))
        first, second = gateways
        receiver = receivers()
        secret = first.http.post("/webhooks", json={"url": receiver.url, "types": ["pmgw.workorder.*"]}).json()["secret"]
        process = lambda gw: gw.get("/health")["webhooks"]["process"]  # noqa: E731
        wait_until(lambda: process(first)["ready"] and process(second)["ready"], timeout=60, what="both processes")
        time.sleep(1.0)  # the one that did not get the lock has asked and stands by
        assert sorted([process(first)["delivering"], process(second)["delivering"]]) == [False, True]
        codes = [gw.http.post("/work-orders", json={"device_id": device, "failure_mode": "NOI", "title": "noise"}
                              ).json()["code"] for gw, device in ((first, "pump-01"), (second, "pump-02"))]
        chain = lambda code: [e["hash"] for e in first.get(f"/work-orders/{code}")["events"]]  # noqa: E731
        expected = [event for code in codes for event in chain(code)]
        wait_until(lambda: set(expected) <= {e["id"] for e in verified(receiver, secret)}, timeout=30,
                   what="every event")
        time.sleep(1.0)  # a second deliverer would have sent them again by now
        ids = [e["id"] for e in verified(receiver, secret)]
        assert sorted(ids) == sorted(expected), "an event was delivered by both gateways"

        holder, other = (first, second) if process(first)["delivering"] else (second, first)
        holder.stop()
        wait_until(lambda: process(other)["delivering"], timeout=30, what="the other gateway to take over")
        code = other.http.post("/work-orders", json={"device_id": "motor-01", "failure_mode": "NOI",
                                                     "title": "noise"}).json()["code"]
        later = [e["hash"] for e in other.get(f"/work-orders/{code}")["events"]]
        wait_until(lambda: set(later) <= {e["id"] for e in verified(receiver, secret)}, timeout=30,
                   what="the events after the take-over")
        ids = [e["id"] for e in verified(receiver, secret)]
        assert len(ids) == len(set(ids)) == len(expected) + len(later)
    finally:
        server.stop()


def test_a_delivery_that_never_succeeds_becomes_a_dead_letter(tmp_path: Path) -> None:
    from gateway.core import Asset, Criticality, Site

    clock = [1000.0]
    site = Site("north", "North", 53.5, 10.0)
    service = TicketingService(TicketingConfig(database_url=f"sqlite:///{tmp_path / 'wo.db'}"),
                               {"pump-01": Asset("pump-01", "pump", "m", "s", site, Criticality.HIGH)}, [],
                               clock=lambda: clock[0], **chain_parts(tmp_path))
    store = service.webhooks
    subscription = store.create("http://127.0.0.1:9/none", [], [], "tests")["id"]
    from gateway.core import Severity
    service.create_manual("pump-01", "NOI", Severity.LOW, "noise", "tests")
    [message] = store.due()[:1]
    for attempt in range(3):
        store.record_many([(message["id"], False, 500, "HTTP 500", 3.0)], [1.0, 2.0], disable_after_s=1e9)
        clock[0] += 10
    [dead] = [d for d in store.deliveries(subscription, DEAD, 10, 0)[1] if d["id"] == message["id"]]
    assert dead["attempts"] == 3 and dead["last_error"] == "HTTP 500"
    assert message["id"] not in [m["id"] for m in store.due()]
    store.redeliver(subscription, message["id"])
    assert message["id"] in [m["id"] for m in store.due()]
    assert json.loads(message["body"])["type"].startswith("pmgw.workorder.")


def test_events_and_retained_work_order_states_on_mqtt(mosquitto: Mosquitto, tmp_path: Path, start_gateway) -> None:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    def subscriber(name: str) -> tuple[Any, list[tuple[str, bytes, bool]]]:
        got: list[tuple[str, bytes, bool]] = []
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=name)
        client.on_message = lambda c, u, m: got.append((m.topic, m.payload, bool(m.retain)))
        client.connect("127.0.0.1", mosquitto.port)
        client.subscribe("pmgw/#", qos=1)
        client.loop_start()
        return client, got

    live, seen = subscriber("events-watcher")
    gw = start_gateway(gateway_document(mosquitto.port, tmp_path, webhooks=SCHEDULE,
                                        mqtt_out={"port": mosquitto.port, "types": ["pmgw.workorder.*"]}))
    order = gw.http.post("/work-orders", json={"device_id": "pump-01", "failure_mode": "NOI", "title": "noise"}).json()
    code = order["code"]
    gw.http.post(f"/work-orders/{code}/accept", json={"engineer_id": order["assigned_engineer_id"]})
    assert gw.http.post(f"/work-orders/{code}/transitions", json={"to": "EN_ROUTE"}).status_code == 200
    chain = [e["hash"] for e in gw.get(f"/work-orders/{code}")["events"]]

    def events() -> list[dict[str, Any]]:
        return [orjson.loads(payload) for topic, payload, _ in seen if "/events/" in topic]

    wait_until(lambda: [e["id"] for e in events()] == chain, timeout=15, what="every event on MQTT, in order")
    for topic, payload, _ in seen:
        if "/events/" in topic:
            event = orjson.loads(payload)
            assert topic == f"pmgw/north/pump-01/events/{event['type']}"
            jsonschema.validate(event, gw.get(f"/event-types/{event['type']}/schema"))
    # A subscriber that comes later gets each order's current state, retained, as the API has it.
    late, retained = subscriber("late-watcher")
    state = wait_until(lambda: [orjson.loads(p) for t, p, r in retained if r and t.endswith(f"/workorders/{code}")],
                       timeout=10, what="the retained state")
    assert state[-1]["state"] == gw.get(f"/work-orders/{code}")["state"] == "EN_ROUTE"
    assert state[-1]["event_id"] == chain[-1]
    mqtt_subscription = next(s for s in gw.items("/webhooks") if s["url"].startswith("mqtt://"))
    assert mqtt_subscription["deliveries"]["delivered"] == len(chain)
    for client in (live, late):
        client.loop_stop()
        client.disconnect()


def test_an_sla_breach_is_mailed_to_the_people_configured_and_goes_out_as_a_notice(
    mosquitto: Mosquitto, tmp_path: Path, start_gateway, receivers
) -> None:
    from aiosmtpd.controller import Controller

    class Inbox:
        def __init__(self) -> None:
            self.mails: list[tuple[list[str], str]] = []

        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd API
            self.mails.append((list(envelope.rcpt_tos), envelope.content.decode()))
            return "250 OK"

    inbox = Inbox()
    smtp = Controller(inbox, hostname="127.0.0.1", port=free_port())
    smtp.start()
    try:
        document = gateway_document(mosquitto.port, tmp_path, webhooks=SCHEDULE,
                                    smtp={"port": smtp.port, "sender": "pmgw@plant.example"})
        document["engineers"][1]["email"] = "anna@plant.example"
        document["ticketing"] |= {
            # Seconds, not hours: the breach comes while the test waits.
            "sla": {"monitor_interval_s": 0.2, "policies": [
                {"priority": p, "respond_s": 1.0, "on_site_s": 60, "restore_s": 600} for p in ("P1", "P2", "P3", "P4")]},
            "notices": {
                "contacts": [{"id": "sam", "name": "Sam Supervisor", "email": "sam@plant.example",
                              "roles": ["supervisor"], "sites": ["north"]},
                             {"id": "sol", "name": "South Supervisor", "email": "sol@plant.example",
                              "roles": ["supervisor"], "sites": ["south"]}],
                "rules": [{"events": ["sla_breach"], "to": ["role:supervisor", "assigned_engineer"]}]}}
        receiver = receivers()
        gw = start_gateway(document)
        secret = gw.http.post("/webhooks", json={"url": receiver.url, "types": ["pmgw.notice.*"]}).json()["secret"]
        order = gw.http.post("/work-orders", json={"device_id": "pump-01", "failure_mode": "NOI",
                                                   "title": "noise"}).json()
        # Nobody accepts within a second: the respond clock breaches.
        mails = wait_until(lambda: len(inbox.mails) >= 2 and inbox.mails, timeout=20, what="the breach mailed")
        to = sorted(address for rcpt, _ in mails for address in rcpt)
        assert to == ["anna@plant.example", "sam@plant.example"]  # the south supervisor is not told
        text = mails[0][1]
        assert f"Subject: [{order['priority']}] {order['code']} on pump-01: SLA breached (respond)" in text
        notices = wait_until(lambda: verified(receiver, secret), timeout=10, what="the notice by webhook")
        notice = notices[0]
        assert notice["type"] == "pmgw.notice.sla_breach" and notice["subject"] == order["code"]
        assert sorted(r["id"] for r in notice["data"]["recipients"]) == ["eng-mechanical", "sam"]
        jsonschema.validate(notice, gw.get(f"/event-types/{notice['type']}/schema"))
        assert len(inbox.mails) == 2  # once, not at every round of the SLA monitor
    finally:
        smtp.stop()


def test_an_external_system_creates_by_its_reference_and_hears_only_of_changes_it_did_not_make(
    mosquitto: Mosquitto, tmp_path: Path, start_gateway, receivers
) -> None:
    gw = start_gateway(gateway_document(mosquitto.port, tmp_path, webhooks=SCHEDULE))
    _, key = gw.gateway.identities.create_key("erp", "integrator", "tests")
    erp = httpx.Client(base_url=gw.api, headers={"Authorization": f"Bearer {key}"}, timeout=10)
    receiver = receivers()
    secret = erp.post("/webhooks", json={"url": receiver.url, "types": ["pmgw.workorder.*"],
                                         "exclude_own": True}).json()["secret"]
    request = {"device_id": "pump-01", "failure_mode": "NOI", "title": "noise reported in SAP",
               "external_ref": "SAP-4711"}
    created = erp.post("/work-orders", json=request)
    assert created.status_code == 201 and created.json()["external_ref"] == "SAP-4711"
    again = erp.post("/work-orders", json=request)
    assert again.status_code == 200 and again.json()["code"] == created.json()["code"]
    code = created.json()["code"]
    assert [o["code"] for o in gw.items("/work-orders", external_ref="SAP-4711")] == [code]
    assert gw.get(f"/work-orders/{code}")["occurrences"] == 1
    # Another reference for the same open asset and failure mode cannot be the same order too.
    clash = erp.post("/work-orders", json=request | {"external_ref": "SAP-4712"})
    assert clash.status_code == 409 and "SAP-4711" in clash.json()["detail"]

    # The plant works the order; the ERP hears of that, not of its own writes.
    gw.http.post(f"/work-orders/{code}/accept", json={"engineer_id": created.json()["assigned_engineer_id"]})
    assert gw.http.post(f"/work-orders/{code}/transitions", json={"to": "EN_ROUTE"}).status_code == 200
    wait_until(lambda: any(e["type"] == "pmgw.workorder.en_route" for e in verified(receiver, secret)), timeout=15,
               what="the plant's step at the ERP")
    heard = verified(receiver, secret)
    assert {e["data"]["actor"] for e in heard}.isdisjoint({f"key:{key.split('_')[1]}"})
    assert {e["type"] for e in heard} >= {"pmgw.workorder.dispatched", "pmgw.workorder.en_route"}
    assert "pmgw.workorder.created" not in {e["type"] for e in heard}
    assert {e["data"]["external_ref"] for e in heard} == {"SAP-4711"}
    erp.close()


def test_a_work_orders_events_queued_together_go_in_order_and_wait_behind_a_failure(tmp_path: Path) -> None:
    """``due`` hands out each work order's due events as one chain, oldest first; a failed one holds the
    rest of its chain (not other orders') until it is delivered."""
    from gateway.core import Asset, Criticality, Severity, Site

    clock = [1000.0]
    site = Site("north", "North", 53.5, 10.0)
    assets = {name: Asset(name, "pump", "m", "s", site, Criticality.HIGH) for name in ("pump-01", "pump-02")}
    service = TicketingService(TicketingConfig(database_url=f"sqlite:///{tmp_path / 'wo.db'}"), assets, [],
                               clock=lambda: clock[0], **chain_parts(tmp_path))
    store = service.webhooks
    store.create("http://127.0.0.1:9/none", ["pmgw.workorder.*"], [], "tests")
    first = service.create_manual("pump-01", "NOI", Severity.LOW, "noise", "tests")
    service.transition(first, State.CANCELLED, "tests", {"reason": "duplicate"})
    second = service.create_manual("pump-02", "NOI", Severity.LOW, "noise", "tests")
    events_of = lambda code: [json.loads(m["body"])["id"] for m in store.due()  # noqa: E731
                              if m["ordering_key"] == f"workorder:{code}"]
    chain = lambda code: [e["hash"] for e in service.get_work_order(code)["events"]]  # noqa: E731
    assert events_of(first) == chain(first) and len(chain(first)) >= 2
    assert events_of(second) == chain(second)
    # The first event of the first order fails: nothing of that order is due until its retry; the other order is.
    head = next(m for m in store.due() if m["ordering_key"] == f"workorder:{first}")
    store.record_many([(head["id"], False, 503, "HTTP 503", 2.0)], [5.0], disable_after_s=1e9)
    assert events_of(first) == [] and events_of(second) == chain(second)
    clock[0] += 10
    assert events_of(first) == chain(first)  # the retry is due: the whole chain again, from its head
    store.record_many([(head["id"], True, 204, None, 2.0)], [5.0], disable_after_s=1e9)
    assert events_of(first) == chain(first)[1:]
    # What the deliverer is sending is held whole; what it delivered and has not recorded yet is done.
    subscription, key = head["subscription_id"], f"workorder:{first}"
    ids = [m["id"] for m in store.due() if m["ordering_key"] == key]
    assert [m for m in store.due(busy={(subscription, key)}) if m["ordering_key"] == key] == []
    assert [m["id"] for m in store.due(sent={ids[0]}) if m["ordering_key"] == key] == ids[1:]
    assert [m["ordering_key"] for m in store.due(busy={(subscription, key)})] == [f"workorder:{second}"] * len(
        chain(second))


def test_every_event_family_made_by_the_service_validates_against_its_served_schema(tmp_path: Path) -> None:
    """One real event of every family (work order, SLA, anomaly, alarm, device offline/online, webhook), made
    by the ticketing service and read from the outbox as a receiver would get it, against its JSON Schema."""
    from gateway.core import DEVICE_OFFLINE_CODE, Alarm, Anomaly, Asset, Criticality, Severity, Site
    from ticketing.cloudevents import TYPES, family, schema

    clock = [1_000_000.0]
    site = Site("north", "North", 53.5, 10.0)
    service = TicketingService(TicketingConfig(database_url=f"sqlite:///{tmp_path / 'wo.db'}"),
                               {name: Asset(name, "pump", "m", "s", site, Criticality.HIGH)
                                for name in ("pump-01", "pump-02", "pump-03")}, [],
                               clock=lambda: clock[0], **chain_parts(tmp_path))
    store = service.webhooks
    store.create("http://127.0.0.1:9/all", [], [], "tests")
    failing = store.create("http://127.0.0.1:9/failing", ["pmgw.anomaly.*"], [], "tests")["id"]
    service.handle_anomaly(Anomaly("pump-01", clock[0], "vibration_rms", 9.0, Severity.HIGH, "VIB", ["vibration"],
                                   "vibration high"))
    service.handle_alarm(Alarm("pump-02", clock[0], "OHE", Severity.HIGH, "winding hot", source="plc"))
    service.handle_alarm(Alarm("pump-02", clock[0] + 1, "OHE", Severity.HIGH, "winding hot", active=False, source="plc"))
    service.handle_alarm(Alarm("pump-03", clock[0], DEVICE_OFFLINE_CODE, Severity.MEDIUM, "silent", source="plc"))
    service.handle_alarm(Alarm("pump-03", clock[0] + 1, DEVICE_OFFLINE_CODE, Severity.MEDIUM, "back",
                               active=False, source="plc"))
    clock[0] += 30 * 86400  # every SLA clock of the orders made is long breached
    service.tick()
    [head] = [m for m in store.due() if m["subscription_id"] == failing][:1]
    store.record_many([(head["id"], False, 500, "HTTP 500", 1.0)], [1.0], disable_after_s=0.0)
    bodies = [json.loads(m["body"]) for m in store.due() if m["subscription_id"] != failing]
    for event in bodies:
        jsonschema.validate(event, schema(event["type"]), format_checker=jsonschema.FormatChecker())
    made = {event["type"] for event in bodies}
    assert {"pmgw.anomaly.detected", "pmgw.alarm.raised", "pmgw.alarm.cleared", "pmgw.device.offline",
            "pmgw.device.online", "pmgw.sla.breach", "pmgw.webhook.disabled", "pmgw.workorder.created"} <= made, made
    assert {family(kind) for kind in made} == set(TYPES.values()) - {"notice"}  # notices: the SMTP test above


def test_the_deliverer_stops_a_chain_at_its_failure(mosquitto: Mosquitto, tmp_path: Path, start_gateway,
                                                    receivers) -> None:
    gw = start_gateway(gateway_document(mosquitto.port, tmp_path, webhooks=SCHEDULE))
    receiver = receivers()
    failed_once: list[str] = []

    def answer(body: bytes) -> int:  # the dispatch event is refused the first time it comes
        event = json.loads(body)
        if event["type"] == "pmgw.workorder.dispatched" and not failed_once:
            failed_once.append(event["id"])
            return 500
        return 200

    receiver.answer = answer
    secret = gw.http.post("/webhooks", json={"url": receiver.url, "types": ["pmgw.workorder.*"]}).json()["secret"]
    order = gw.http.post("/work-orders", json={"device_id": "pump-01", "failure_mode": "NOI", "title": "noise"}).json()
    assert gw.http.post(f"/work-orders/{order['code']}/transitions",
                        json={"to": "CANCELLED", "reason": "duplicate call"}).status_code == 200
    chain = [e["hash"] for e in gw.get(f"/work-orders/{order['code']}")["events"]]
    wait_until(lambda: [e["id"] for e in verified(receiver, secret)] == chain, timeout=20, what="the chain delivered")
    # Every attempt in the receiver's log: nothing after the refused event came before its retry.
    attempts = [json.loads(body)["id"] for _, _, body in receiver.received]
    refused = attempts.index(failed_once[0])
    assert attempts[:refused + 1] == chain[:chain.index(failed_once[0]) + 1]
    assert attempts[refused + 1] == failed_once[0], attempts
