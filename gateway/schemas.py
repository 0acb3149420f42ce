"""What the REST API answers: one response model per kind of resource.

They exist for the OpenAPI document (so a client generator, schemathesis and a reader
know every field) and to make sure nothing leaves the gateway that is not declared.
Request models live with the endpoints that take them.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class Answer(BaseModel):
    # Extra fields would be dropped silently by FastAPI; forbidding them makes a forgotten
    # declaration fail the tests instead.
    model_config = {"extra": "forbid"}


class SiteOut(Answer):
    id: str
    name: str
    latitude: float
    longitude: float
    environment: dict[str, Any] = Field(description="humidity, ambient temperature, altitude... as configured")


class AssetOut(Answer):
    id: str
    type: str
    model: str
    serial: str
    site: SiteOut
    criticality: str
    firmware: str
    name: str


class OperatingState(Answer):
    state: str = Field(description="operating, maintenance, standby or commissioning")
    suppresses_tickets: bool
    reason: str | None = None
    actor: str | None = None
    until: float | None = Field(None, description="epoch seconds the state ends by itself")
    since: float | None = None


class AssetDetail(AssetOut):
    operating_state: OperatingState


class ReadingOut(Answer):
    metric: str
    value: float | None = Field(description="null for a value that is not a number")
    timestamp: float
    quality: str
    source: str


class LatestReading(ReadingOut):
    unit: str = Field(description="the series' unit, as configured or as its source says (engUnit); '' unknown")
    data_type: str = Field(description="the data type the source sends (uint32, Int16, Double…); '' unknown. "
                                       "Values are numbers either way: an integer type is exact up to 2^53")


class LatestReadings(Answer):
    device_id: str
    readings: list[LatestReading]
    stale: bool = Field(description="the device is offline (e.g. a Sparkplug DDEATH/NDEATH): these are its last "
                                    "values, each with quality 'stale', not what it measures now")


class Rollup(Answer):
    timestamp: float = Field(description="start of the bucket, epoch seconds")
    count: int
    min: float | None
    mean: float | None
    max: float | None


class ReadingHistory(Answer):
    """resolution=raw: the readings themselves."""

    device_id: str
    since: float
    until: float
    readings: list[ReadingOut]
    truncated: bool = Field(description="more readings matched than 'limit': these are the newest")
    next_until: float | None = Field(description="when truncated: ask again with until=this for the older "
                                                 "ones (no reading is in both answers)")


class RollupHistory(Answer):
    """resolution=rollup: min, mean and max per bucket of one metric."""

    device_id: str
    metric: str
    since: float
    until: float
    rollups: list[Rollup]


class AnomalyOut(Answer):
    device_id: str
    detected_at: float
    detector: str
    score: float
    severity: str
    failure_mode: str
    metrics: list[str]
    message: str
    work_order_code: str | None


class AlarmOut(Answer):
    device_id: str
    at: float = Field(description="when the device raised or cleared it")
    code: str
    active: bool = Field(description="true: raised; false: cleared")
    severity: str
    message: str
    source: str
    outcome: str = Field(description="what ticketing made of it: work_order, cleared, chattering, shelved, "
                                     "not_operating (asset in maintenance, standby, commissioning) or not_ticketed")
    work_order_code: str | None


class SlaClock(Answer):
    deadline: float
    used: float = Field(description="fraction of the clock's allowance used")
    met_at: float | None
    breached: bool


class SlaOut(Answer):
    policy: str
    paused: bool
    clocks: dict[str, SlaClock] = Field(description="respond and restore")


class WorkOrderSummary(Answer):
    code: str
    device_id: str
    site_id: str
    origin: str = Field(description="anomaly, predictive (a forecast), device_alarm or manual")
    failure_mode: str = Field(description="ISO 14224 failure mode code")
    failure_mechanism: str | None
    failure_cause: str | None
    maintainable_item: str | None
    priority: str
    state: str
    title: str
    required_skill: str | None
    occurrences: int
    assigned_engineer_id: str | None
    created_at: float
    updated_at: float
    last_occurrence_at: float | None
    impact: str | None
    escalation_level: int
    equipment_class: str | None
    repeat_of: str | None
    scope: str | None
    due_at: float | None
    closed_at: float | None
    external_ref: str | None = Field(description="the reference an external system (CMMS, ERP) knows it by")
    sla: SlaOut | None = Field(description="the respond, on-site and restore clocks now")


class EventOut(Answer):
    at: float
    kind: str
    actor: str
    data: dict[str, Any]
    hash: str = Field(description="keyed MAC chaining this event to the one before")


class WorkOrderDetail(WorkOrderSummary):
    context: dict[str, Any] = Field(description="the asset, site and evidence when the order was opened")
    assignment: dict[str, Any] | None = Field(description="who was chosen and why")
    eta: float | None
    offered_at: float | None
    accepted_at: float | None
    declined_by: list[str]
    required_level: int | None
    required_certifications: list[str]
    closure: dict[str, Any]
    events: list[EventOut]


class ChainVerdict(Answer):
    code: str
    valid: bool
    events: int
    broken_at: int | None
    reason: str | None


class SignatureDate(Answer):
    statement: str = Field(description="engineer, supervisor or customer")
    signed_at: float


class SignatureVerdict(Answer):
    """What anyone may learn from a report's QR code: code, asset, dates and the verdict, nothing else."""

    code: str
    verdict: str = Field(description="valid; changed (reasons say what); unknown (no such signature here)")
    asset: str | None
    created_at: float | None
    closed_at: float | None
    head: str | None = Field(description="the signature event checked")
    signatures: list[SignatureDate]
    reasons: list[str]
    document: str | None = Field(None, description="for an uploaded PDF: 'issued' (the very report the gateway "
                                                   "issued) or 'not_issued'")
    sha256: str | None = Field(None, description="for an uploaded PDF: its digest")


class SignedOff(Answer):
    code: str
    head: str = Field(description="the signature event: the head the service report is issued for")
    report_url: str
    report_sha256: str
    verify_url: str


class EngineerLocation(Answer):
    latitude: float
    longitude: float
    updated_at: float | None = None


class LocatedEngineer(EngineerLocation):
    engineer_id: str


class EngineerOut(Answer):
    """Personal fields are null for a caller who may not see them."""

    id: str
    name: str | None
    skills: list[Any]
    certifications: list[dict[str, Any]]
    home: EngineerLocation | None
    shift: dict[str, Any]
    on_call: dict[str, Any] | None
    capacity: int
    phone: str | None
    email: str | None
    skill_levels: dict[str, int]
    on_shift: bool
    available_for: list[str]
    open_work_orders: int
    last_known_location: EngineerLocation | None


class PlannedStop(Answer):
    work_order: str
    priority: str
    accepted: bool
    deadline: float | None
    depart_at: float | None
    arrive_at: float | None
    finish_at: float | None
    late_min: float | None


class DayPlan(Answer):
    """An engineer's planned jobs in order, as dispatch times them (null times: it fits no shift ahead)."""

    engineer_id: str
    at: float
    free_from: float
    stops: list[PlannedStop]
    drive_min: float | None
    fits_shifts: bool


class Reassigned(Answer):
    reassigned: list[str]


class BusEvent(Answer):
    work_order_code: str
    device_id: str
    kind: str
    at: float
    actor: str
    data: dict[str, Any]


class Readiness(Answer):
    ready: bool
    reasons: list[str] = Field(description="why not ready (empty when ready)")


class Health(Answer):
    """Component diagnostics differ per connector and sink kind; their common fields are here."""

    status: str = Field(description="ok or degraded")
    problems: list[str] = Field(description="what makes it degraded, one line each")
    uptime_s: float
    connectors: list[dict[str, Any]]
    pipeline: dict[str, Any] | None
    sinks: list[dict[str, Any]]
    detectors: dict[str, Any]
    ticketing: dict[str, Any]
    events_published: int
    webhooks: dict[str, Any] = Field(description="outbox deliveries: looks at the outbox, attempts, delivered, "
                                     "failed, last error; the delivery process (running, pid, starts, exits)")
    cluster: dict[str, Any] | None = Field(
        None, description="in a cluster: this gateway's id, the live members, the units it owns, hand-over counts")
