"""Schemathesis against the live OpenAPI document, signed in as an admin: every operation, a bounded
number of generated requests each; no server error, and every response body matching the schema the
document declares for its status."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error, response_schema_conformance

from gateway.broker import Mosquitto
from tests.conftest import gateway_document

EXAMPLES = 20  # per operation: the whole run stays around a minute


def test_every_operation_answers_as_documented(mosquitto: Mosquitto, tmp_path: Path, start_gateway) -> None:
    gw = start_gateway(gateway_document(mosquitto.port, tmp_path))
    schema = schemathesis.openapi.from_url(f"{gw.url}/openapi.json")
    headers = {"Authorization": f"Bearer {gw.admin_key}"}
    operations = [result.ok() for result in schema.get_all_operations()]
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
    # Errors are validated too: the document declares them as problem+json.
    assert schema.raw_schema["components"]["schemas"]["Problem"]["required"][:3] == ["type", "title", "status"]
