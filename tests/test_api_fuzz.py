"""Schemathesis against the live OpenAPI document, signed in as an admin: every operation, a bounded
number of generated requests each; no server error, and every response body matching the schema the
document declares for its status."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import paho.mqtt.publish as publish
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error, response_schema_conformance

from gateway.broker import Mosquitto
from tests.conftest import gateway_document, wait_until

EXAMPLES = 20  # per operation: the whole run stays around a minute
# Uploaded service reports (POST /verify/{code}/report): any bytes, a PDF header now and then.
schemathesis.openapi.media_type("application/pdf", st.one_of(st.binary(max_size=4096),
                                                             st.binary(max_size=4096).map(b"%PDF-1.4\n".__add__)))


def test_every_operation_answers_as_documented(mosquitto: Mosquitto, tmp_path: Path, start_gateway) -> None:
    gw = start_gateway(gateway_document(mosquitto.port, tmp_path))
    schema = schemathesis.openapi.from_url(f"{gw.url}/openapi.json")
    headers = {"Authorization": f"Bearer {gw.admin_key}"}
    # The event stream never ends (a generated request would wait forever); tests/test_dashboard.py drives it.
    operations = [op for op in (result.ok() for result in schema.get_all_operations()) if op.path != "/api/v1/stream"]
    calls: dict[str, int] = {}
    statuses: dict[int, int] = {}

    for operation in operations:
        label = f"{operation.method.upper()} {operation.path}"

        @given(case=operation.as_strategy())
        @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def exercise(case: Any) -> None:
            response = case.call(base_url=gw.url, headers=headers)
            calls[label] = calls.get(label, 0) + 1
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
            case.validate_response(response, checks=[not_a_server_error, response_schema_conformance])

        exercise()
    print(f"schemathesis: {len(operations)} operations, {sum(calls.values())} requests, statuses {statuses}")
    assert len(operations) >= 26 and all(calls.get(f"{o.method.upper()} {o.path}") for o in operations)
    assert not [status for status in statuses if status >= 500]

    # Generated ids mostly meet 404s; so every read is also made on things that exist (telemetry, a
    # dispatched and accepted work order, a located engineer) and its answer checked against the document.
    now = time.time()
    publish.multiple([("plant/north/pump-01/telemetry",
                       json.dumps({"ts": now - 60 + i, "metrics": {"vibration_rms": 2.0 + i / 100}}), 1, False)
                      for i in range(60)], hostname="127.0.0.1", port=mosquitto.port)
    wait_until(lambda: gw.get("/devices/pump-01/readings/latest")["readings"], timeout=15, what="telemetry stored")
    order = gw.http.post("/work-orders", json={"device_id": "pump-01", "failure_mode": "VIB", "title": "vibration"})
    code = order.json()["code"]
    engineer = order.json()["assigned_engineer_id"] or "eng-mechanical"
    gw.http.post(f"/work-orders/{code}/accept", json={"engineer_id": engineer})
    gw.http.put(f"/engineers/{engineer}/location", json={"latitude": 53.6, "longitude": 10.0})
    subscription = gw.http.post("/webhooks", json={"url": "http://127.0.0.1:9/hook"}).json()["id"]
    known = {"asset_id": "pump-01", "device_id": "pump-01", "code": code, "engineer_id": engineer,
             "username": "admin", "key_id": "none", "subscription_id": subscription,
             "event_type": "pmgw.workorder.created", "section": "detectors", "number": 1}
    queries = {"/api/v1/devices/{device_id}/readings": [{}, {"metric": "vibration_rms", "resolution": "rollup"}],
               # Not signed: no report issued yet, but a copy renders (tests/test_service_report.py signs one).
               "/api/v1/work-orders/{code}/report.pdf": [{"copy": "true"}]}
    checked = []
    for operation in operations:
        if operation.method.upper() != "GET":
            continue
        parameters = {p.name: known[p.name] for p in operation.iter_parameters() if p.location == "path"}
        for query in queries.get(operation.path, [{}]):
            case = operation.Case(path_parameters=parameters, query=query)
            response = case.call(base_url=gw.url, headers=headers)
            assert response.status_code == 200, (operation.path, response.text)
            case.validate_response(response, checks=[response_schema_conformance])
            checked.append(operation.path)
    print(f"schemathesis: {len(checked)} reads of existing resources match their declared schemas")
    detail = gw.get(f"/work-orders/{code}")
    assert detail["events"] and detail["sla"]["clocks"] and detail["assignment"]
    # Errors are validated too: the document declares them as problem+json.
    assert schema.raw_schema["components"]["schemas"]["Problem"]["required"][:3] == ["type", "title", "status"]
