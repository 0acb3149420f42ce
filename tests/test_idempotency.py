"""Idempotency-Key on writes: a replay gets the first answer and changes nothing (an engineer's phone
replaying its offline queue, an integration retrying after a timeout)."""

from __future__ import annotations

import threading
from pathlib import Path

from gateway.broker import Mosquitto
from tests.conftest import gateway_document


def test_a_replayed_write_gets_the_first_answer_and_changes_nothing(mosquitto: Mosquitto, tmp_path: Path,
                                                                     start_gateway) -> None:
    gw = start_gateway(gateway_document(mosquitto.port, tmp_path))
    manual = {"device_id": "pump-01", "failure_mode": "NOI", "title": "grinding noise"}
    first = gw.http.post("/work-orders", json=manual, headers={"Idempotency-Key": "phone-1:0001"})
    again = gw.http.post("/work-orders", json=manual, headers={"Idempotency-Key": "phone-1:0001"})
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json() and again.headers["idempotent-replayed"] == "true"
    code = first.json()["code"]
    # Without the key the same POST would have counted a second occurrence on the open order.
    assert gw.get(f"/work-orders/{code}")["occurrences"] == 1 and len(gw.items("/work-orders")) == 1

    # A lifecycle step replayed from an offline queue: its original answer, not 409.
    engineer = first.json()["assigned_engineer_id"]
    gw.http.post(f"/work-orders/{code}/accept", json={"engineer_id": engineer})
    step = gw.http.post(f"/work-orders/{code}/transitions", json={"to": "EN_ROUTE"},
                        headers={"Idempotency-Key": "phone-1:0002"})
    replayed = gw.http.post(f"/work-orders/{code}/transitions", json={"to": "EN_ROUTE"},
                            headers={"Idempotency-Key": "phone-1:0002"})
    assert step.status_code == replayed.status_code == 200 and replayed.json() == step.json()
    assert [e["kind"] for e in gw.get(f"/work-orders/{code}")["events"]].count("en_route") == 1
    assert gw.http.post(f"/work-orders/{code}/transitions", json={"to": "EN_ROUTE"}).status_code == 409

    # The same key for another request is refused; a bad key too.
    other = gw.http.post("/work-orders", json=manual | {"title": "another"}, headers={"Idempotency-Key": "phone-1:0001"})
    assert other.status_code == 422 and "another request" in other.json()["detail"]
    assert gw.http.post("/work-orders", json=manual, headers={"Idempotency-Key": "x" * 201}).status_code == 400

    # Keys belong to their caller: another caller's same key is a request of its own.
    _, key = gw.gateway.identities.create_key("other", "dispatcher", "tests")
    theirs = gw.http.post("/work-orders", json=manual | {"device_id": "pump-02"},
                          headers={"Idempotency-Key": "phone-1:0001", "Authorization": f"Bearer {key}"})
    assert theirs.status_code == 201 and "idempotent-replayed" not in theirs.headers

    # Two identical requests at the same moment: one is made, the other gets its answer.
    answers = []

    def post() -> None:
        answers.append(gw.http.post("/work-orders", json=manual | {"device_id": "motor-01", "failure_mode": "OHE"},
                                    headers={"Idempotency-Key": "scada-7"}))

    threads = [threading.Thread(target=post) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert {a.status_code for a in answers} == {201} and answers[0].json() == answers[1].json()
    assert gw.get(f"/work-orders/{answers[0].json()['code']}")["occurrences"] == 1
