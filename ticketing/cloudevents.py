"""One event model for what the gateway tells other systems: CloudEvents 1.0, structured JSON.

Types: ``pmgw.workorder.<kind>`` for every event of a work order's chain (``created``,
``dispatched`` (the offer), ``accepted``, ``en_route`` … ``signed``), ``pmgw.sla.warning`` and
``pmgw.sla.breach``, ``pmgw.anomaly.detected``, ``pmgw.alarm.raised`` and ``pmgw.alarm.cleared``,
``pmgw.device.offline`` and ``pmgw.device.online``, ``pmgw.webhook.disabled``, and the escalation
notices ``pmgw.notice.<kind>`` addressed to people (:mod:`ticketing.notices`). Each event has a stable
``id`` (a work-order event's is its chain MAC: the same at every redelivery), ``source`` (the gateway),
``subject`` (the work order code, or the device), ``time`` and versioned ``data`` described by the JSON
Schema its ``dataschema`` names (:data:`SCHEMAS`, served by the API).

>>> envelope = work_order_envelope("urn:pm-gateway:plant", "ab" * 32, "WO-1", "pump-01", "north", "sla_breach",
...                                0.0, "pm-gateway", {"clock": "respond"})
>>> envelope.type, envelope.subject, envelope.ordering_key
('pmgw.sla.breach', 'WO-1', 'workorder:WO-1')
>>> body = orjson.loads(to_json(envelope))
>>> body["specversion"], body["data"]["version"], body["data"]["details"]
('1.0', 1, {'clock': 'respond'})
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import orjson  # the doctests use it
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent

DATA_VERSION = 1
_IDS = uuid.UUID("6f1b0c8e-4d2a-4c59-9c1e-2f4a7d1e9b30")  # namespace of the ids made here


@dataclass(frozen=True)
class Envelope:
    id: str
    type: str
    source: str
    subject: str
    time: float
    data: dict[str, Any]
    site: str  # for subscriptions limited to sites
    ordering_key: str  # deliveries with one key keep their order
    actor: str = ""  # who caused it, for subscriptions that leave out their own changes


def _schema_uri(family: str) -> str:
    return f"urn:pm-gateway:schema:{family}:v{DATA_VERSION}"


def work_order_envelope(source: str, event_hash: str, code: str, device_id: str, site_id: str, kind: str,
                        at: float, actor: str, details: dict[str, Any], external_ref: str | None = None) -> Envelope:
    kind_type = {"sla_warning": "pmgw.sla.warning", "sla_breach": "pmgw.sla.breach"}.get(kind, f"pmgw.workorder.{kind}")
    data = {"version": DATA_VERSION, "code": code, "device_id": device_id, "site_id": site_id, "kind": kind,
            "actor": actor, "at": at, "details": details, "external_ref": external_ref}
    return Envelope(event_hash[:64], kind_type, source, code, at, data, site_id, f"workorder:{code}", actor)


def anomaly_envelope(source: str, record_id: int, device_id: str, site_id: str, detected_at: float, detector: str,
                     score: float, severity: str, failure_mode: str, metrics: list[str], message: str,
                     work_order_code: str | None) -> Envelope:
    data = {"version": DATA_VERSION, "device_id": device_id, "site_id": site_id, "detected_at": detected_at,
            "detector": detector, "score": score, "severity": severity, "failure_mode": failure_mode,
            "metrics": metrics, "message": message, "work_order_code": work_order_code}
    return Envelope(_id(source, "anomaly", record_id), "pmgw.anomaly.detected", source, device_id, detected_at, data,
                    site_id, f"device:{device_id}")


def alarm_envelope(source: str, record_id: int, device_id: str, site_id: str, at: float, code: str, active: bool,
                   severity: str, message: str, alarm_source: str, outcome: str, work_order_code: str | None,
                   offline_code: str) -> Envelope:
    if code == offline_code:
        kind = "pmgw.device.offline" if active else "pmgw.device.online"
    else:
        kind = "pmgw.alarm.raised" if active else "pmgw.alarm.cleared"
    data = {"version": DATA_VERSION, "device_id": device_id, "site_id": site_id, "at": at, "code": code,
            "active": active, "severity": severity, "message": message, "source": alarm_source, "outcome": outcome,
            "work_order_code": work_order_code}
    return Envelope(_id(source, "alarm", record_id), kind, source, device_id, at, data, site_id, f"device:{device_id}")


def notice_envelope(source: str, event_hash: str, index: int, code: str, device_id: str, site_id: str, kind: str,
                    priority: str, at: float, subject: str, text: str, recipients: list[dict[str, Any]]) -> Envelope:
    data = {"version": DATA_VERSION, "code": code, "device_id": device_id, "site_id": site_id, "kind": kind,
            "priority": priority, "at": at, "subject": subject, "text": text, "recipients": recipients,
            "event_id": event_hash}
    return Envelope(_id(source, "notice", f"{event_hash}:{index}"), f"pmgw.notice.{kind}", source, code, at, data,
                    site_id, f"workorder:{code}")


def webhook_disabled_envelope(source: str, subscription_id: int, url: str, at: float, reason: str) -> Envelope:
    data = {"version": DATA_VERSION, "subscription_id": subscription_id, "url": url, "at": at, "reason": reason}
    return Envelope(_id(source, "webhook-disabled", f"{subscription_id}:{at}"), "pmgw.webhook.disabled", source,
                    f"webhook:{subscription_id}", at, data, "", f"webhook:{subscription_id}")


def _id(source: str, kind: str, key: Any) -> str:
    return str(uuid.uuid5(_IDS, f"{source}|{kind}|{key}"))


def family(event_type: str) -> str:
    """The schema family of a type: workorder (sla included), anomaly, alarm (device included), webhook."""
    name = event_type.split(".")[1]
    return {"sla": "workorder", "device": "alarm"}.get(name, name)


def to_json(envelope: Envelope) -> bytes:
    """The event as CloudEvents structured-mode JSON (what a webhook body and an MQTT payload carry)."""
    event = CloudEvent(attributes={
        "id": envelope.id, "source": envelope.source, "type": envelope.type, "specversion": "1.0",
        "subject": envelope.subject, "time": datetime.fromtimestamp(envelope.time, timezone.utc),
        "datacontenttype": "application/json", "dataschema": _schema_uri(family(envelope.type)),
    }, data=envelope.data)
    return JSONFormat().write(event)


def digest(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


_STRING, _NUMBER, _NULLABLE_STRING = {"type": "string"}, {"type": "number"}, {"type": ["string", "null"]}
_DATA = {
    "workorder": {"code": _STRING, "device_id": _STRING, "site_id": _STRING, "kind": _STRING, "actor": _STRING,
                  "at": _NUMBER, "details": {"type": "object"}, "external_ref": _NULLABLE_STRING},
    "anomaly": {"device_id": _STRING, "site_id": _STRING, "detected_at": _NUMBER, "detector": _STRING,
                "score": _NUMBER, "severity": _STRING, "failure_mode": _STRING,
                "metrics": {"type": "array", "items": _STRING}, "message": _STRING,
                "work_order_code": _NULLABLE_STRING},
    "alarm": {"device_id": _STRING, "site_id": _STRING, "at": _NUMBER, "code": _STRING, "active": {"type": "boolean"},
              "severity": _STRING, "message": _STRING, "source": _STRING, "outcome": _STRING,
              "work_order_code": _NULLABLE_STRING},
    "webhook": {"subscription_id": {"type": "integer"}, "url": _STRING, "at": _NUMBER, "reason": _STRING},
    "notice": {"code": _STRING, "device_id": _STRING, "site_id": _STRING, "kind": _STRING, "priority": _STRING,
               "at": _NUMBER, "subject": _STRING, "text": _STRING, "event_id": _STRING,
               "recipients": {"type": "array", "items": {
                   "type": "object", "required": ["id", "name", "email", "as"],
                   "properties": {"id": _STRING, "name": _STRING, "email": _NULLABLE_STRING, "as": _STRING}}}},
}
# Every type there is, with its family (the schema its data follows).
TYPES: dict[str, str] = {
    **{f"pmgw.workorder.{kind}": "workorder" for kind in (
        "created", "planned", "dispatched", "reassigned", "escalated", "accepted", "declined", "acceptance_timeout",
        "occurrence", "related_finding", "condition_cleared", "reopened", "amended", "signed", "report_issued", "escalation",
        "diagnosed", "en_route", "on_site", "in_progress", "on_hold", "done", "verified", "archived", "cancelled",
        "merged", "site_flood_finding", "external_reference", "routed", "routing_escalation")},
    "pmgw.sla.warning": "workorder", "pmgw.sla.breach": "workorder",
    "pmgw.anomaly.detected": "anomaly",
    "pmgw.alarm.raised": "alarm", "pmgw.alarm.cleared": "alarm", "pmgw.device.offline": "alarm",
    "pmgw.device.online": "alarm",
    "pmgw.webhook.disabled": "webhook",
    **{f"pmgw.notice.{kind}": "notice" for kind in ("sla_warning", "sla_breach", "escalation", "escalated",
                                                         "routed", "routing_escalation")},
}


def schema(event_type: str) -> dict[str, Any]:
    """The JSON Schema (2020-12) of a whole event of ``event_type``: the CloudEvents envelope and its data."""
    properties = _DATA[family(event_type)]
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": _schema_uri(family(event_type)),
        "title": event_type,
        "type": "object",
        "required": ["specversion", "id", "source", "type", "subject", "time", "datacontenttype", "data"],
        "properties": {
            "specversion": {"const": "1.0"}, "id": {"type": "string", "minLength": 1},
            "source": {"type": "string", "minLength": 1}, "type": {"const": event_type},
            "subject": _STRING, "time": {"type": "string", "format": "date-time"},
            "datacontenttype": {"const": "application/json"}, "dataschema": {"const": _schema_uri(family(event_type))},
            "data": {"type": "object", "required": ["version", *properties], "additionalProperties": False,
                     "properties": {"version": {"const": DATA_VERSION}, **properties}},
        },
    }
