"""Work-order storage (SQLAlchemy 2)."""

from __future__ import annotations

import enum
from typing import Any

from sqlalchemy import JSON, Boolean, Float, ForeignKey, Index, Integer, LargeBinary, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class Base(DeclarativeBase):
    pass


class Origin(str, enum.Enum):
    ANOMALY = "anomaly"
    PREDICTIVE = "predictive"
    DEVICE_ALARM = "device_alarm"
    MANUAL = "manual"


class WorkOrder(Base):
    __tablename__ = "work_orders"
    # The flood check counts a site's orders of the last minutes on every new order.
    __table_args__ = (Index("ix_work_orders_site_created", "site_id", "created_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(32), unique=True)
    # device + failure mode; set only while the order is open, so the unique
    # constraint allows exactly one open order per key and any number of closed ones.
    open_dedup_key: Mapped[str | None] = mapped_column(String(200), unique=True)
    dedup_key: Mapped[str] = mapped_column(String(200), index=True)
    device_id: Mapped[str] = mapped_column(String(100), index=True)
    site_id: Mapped[str] = mapped_column(String(100), index=True)
    origin: Mapped[str] = mapped_column(String(20))
    failure_mode: Mapped[str] = mapped_column(String(10), index=True)
    failure_mechanism: Mapped[str] = mapped_column(String(60), default="")
    failure_cause: Mapped[str] = mapped_column(String(60), default="")
    maintainable_item: Mapped[str] = mapped_column(String(60), default="")
    priority: Mapped[str] = mapped_column(String(2), index=True)
    state: Mapped[str] = mapped_column(String(20), index=True)
    title: Mapped[str] = mapped_column(String(300))
    required_skill: Mapped[str] = mapped_column(String(60))
    occurrences: Mapped[int] = mapped_column(Integer, default=1)
    context: Mapped[dict[str, Any]] = mapped_column(JSON)
    assigned_engineer_id: Mapped[str | None] = mapped_column(String(100), index=True)
    assignment: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    eta: Mapped[float | None] = mapped_column(Float)
    # Resolution, parts, labour, restored_at, verification, merge target: set by transitions.
    closure: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[float] = mapped_column(Float, index=True)
    updated_at: Mapped[float] = mapped_column(Float)
    last_occurrence_at: Mapped[float] = mapped_column(Float)
    # ISO 14224 impact: critical, degraded or incipient (a predicted failure caught early).
    impact: Mapped[str] = mapped_column(String(10), default="incipient")
    required_level: Mapped[int] = mapped_column(Integer, default=1)
    required_certifications: Mapped[list[str]] = mapped_column(JSON, default=list)
    # Dispatch: when the current engineer was asked, when they accepted, who declined or let it time out.
    offered_at: Mapped[float | None] = mapped_column(Float)
    accepted_at: Mapped[float | None] = mapped_column(Float)
    declined: Mapped[list[str]] = mapped_column(JSON, default=list)
    escalation_level: Mapped[int] = mapped_column(Integer, default=0)
    # SLA: policy, deadlines per clock, when each was met, alerts fired, paused time.
    sla: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # The earlier order of the same asset and failure mode, when this one is a repeat failure.
    repeat_of: Mapped[str | None] = mapped_column(String(32))
    # "asset", or "site" for the one incident a flood of findings at a site is gathered into.
    scope: Mapped[str] = mapped_column(String(10), default="asset")
    # Predictive work: when the forecast says the limit will be crossed.
    due_at: Mapped[float | None] = mapped_column(Float)
    closed_at: Mapped[float | None] = mapped_column(Float)
    # The reference an external system (CMMS, ERP) knows this order by: unique, found by it.
    external_ref: Mapped[str | None] = mapped_column(String(100), unique=True)

    events: Mapped[list["Event"]] = relationship(
        back_populates="work_order", order_by="Event.id", cascade="all, delete-orphan"
    )


class Event(Base):
    """Append-only history of a work order."""

    __tablename__ = "work_order_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    work_order_id: Mapped[int] = mapped_column(ForeignKey("work_orders.id"), index=True)
    at: Mapped[float] = mapped_column(Float)
    kind: Mapped[str] = mapped_column(String(40))
    actor: Mapped[str] = mapped_column(String(100))
    data: Mapped[dict[str, Any]] = mapped_column(JSON)
    # HMAC over the previous event's MAC, this event's content and the order's sealed fields
    # (ticketing.chain); key_id names the gateway key that made it.
    hash: Mapped[str] = mapped_column(String(64))
    row_digest: Mapped[str | None] = mapped_column(String(64))
    key_id: Mapped[str | None] = mapped_column(String(16))

    work_order: Mapped[WorkOrder] = relationship(back_populates="events")


class AnomalyRecord(Base):
    __tablename__ = "anomalies"

    id: Mapped[int] = mapped_column(primary_key=True)
    device_id: Mapped[str] = mapped_column(String(100), index=True)
    detected_at: Mapped[float] = mapped_column(Float, index=True)
    detector: Mapped[str] = mapped_column(String(40))
    score: Mapped[float] = mapped_column(Float)
    severity: Mapped[str] = mapped_column(String(10))
    failure_mode: Mapped[str] = mapped_column(String(10))
    metrics: Mapped[list[str]] = mapped_column(JSON)
    message: Mapped[str] = mapped_column(Text)
    work_order_code: Mapped[str | None] = mapped_column(String(32), index=True)


class AlarmOutcome(str, enum.Enum):
    """What ticketing made of one alarm edge (ISA-18.2's alarm journal keeps this beside the alarm)."""

    WORK_ORDER = "work_order"  # opened one, or added an occurrence to the open one
    CLEARED = "cleared"  # the condition went away; the open order, if any, was told
    CHATTERING = "chattering"  # this edge made the signal chatter: an instrument (AIR) ticket, signal shelved
    SHELVED = "shelved"  # dropped while the chattering signal is shelved
    NOT_OPERATING = "not_operating"  # the asset is in maintenance, standby or commissioning
    NOT_TICKETED = "not_ticketed"  # configured not to raise tickets (device offline)


class AlarmRecord(Base):
    """The alarm journal: every edge (raised or cleared) a device reported, and what ticketing made of it."""

    __tablename__ = "alarms"

    id: Mapped[int] = mapped_column(primary_key=True)
    device_id: Mapped[str] = mapped_column(String(100), index=True)
    at: Mapped[float] = mapped_column(Float, index=True)
    code: Mapped[str] = mapped_column(String(40))
    active: Mapped[bool] = mapped_column(Boolean)
    severity: Mapped[str] = mapped_column(String(10))
    message: Mapped[str] = mapped_column(Text)
    source: Mapped[str] = mapped_column(String(200))
    outcome: Mapped[str] = mapped_column(String(20))
    work_order_code: Mapped[str | None] = mapped_column(String(32), index=True)


class CodeCounter(Base):
    """Last work-order number issued per day, for codes like WO-20261125-0001."""

    __tablename__ = "code_counters"

    day: Mapped[str] = mapped_column(String(8), primary_key=True)
    last: Mapped[int] = mapped_column(Integer)


class EngineerLocation(Base):
    """Last known location of an engineer (from the mobile app or a dispatcher); home when absent."""

    __tablename__ = "engineer_locations"

    engineer_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    latitude: Mapped[float] = mapped_column(Float)
    longitude: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)


class AssetState(Base):
    """An asset's operating state when it is not simply operating: maintenance, standby, commissioning."""

    __tablename__ = "asset_states"

    asset_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    state: Mapped[str] = mapped_column(String(20))
    reason: Mapped[str] = mapped_column(String(300))
    actor: Mapped[str] = mapped_column(String(100))
    until: Mapped[float | None] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)


class ServiceReport(Base):
    """A service report as issued at sign-off: the PDF itself, kept so a later download is the same document.

    Its digest is also sealed into the order's chain (a ``report_issued`` event), so editing the stored
    file, or its digest here, shows at verification.
    """

    __tablename__ = "service_reports"

    id: Mapped[int] = mapped_column(primary_key=True)
    work_order_id: Mapped[int] = mapped_column(ForeignKey("work_orders.id"), index=True)
    # The chain head the report was issued for: the hash of the signature event its QR code names.
    head: Mapped[str] = mapped_column(String(64), index=True)
    issued_at: Mapped[float] = mapped_column(Float)
    sha256: Mapped[str] = mapped_column(String(64))
    pdf: Mapped[bytes] = mapped_column(LargeBinary)


class SignatureDrawing(Base):
    """A signature drawn on the dashboard (PNG); a signature's content names it by digest."""

    __tablename__ = "signature_drawings"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    work_order_id: Mapped[int] = mapped_column(ForeignKey("work_orders.id"), index=True)
    png: Mapped[bytes] = mapped_column(LargeBinary)


class WebhookSubscription(Base):
    """Where events go: a receiver's URL, the event types and sites it wants, the secret it verifies with."""

    __tablename__ = "webhook_subscriptions"

    id: Mapped[int] = mapped_column(primary_key=True)
    url: Mapped[str] = mapped_column(String(2000))
    # Event types (pmgw.workorder.*, exact names or a trailing '*'); empty: every type.
    types: Mapped[list[str]] = mapped_column(JSON, default=list)
    sites: Mapped[list[str]] = mapped_column(JSON, default=list)  # empty: every site
    # Standard Webhooks signing secret (whsec_...): needed to sign, so kept, but sealed with a key from the
    # gateway's keyring (a copy of the database alone does not give it away); shown once, never listed.
    secret: Mapped[str] = mapped_column(String(500))
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    disabled_reason: Mapped[str | None] = mapped_column(Text)
    created_by: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[float] = mapped_column(Float)
    # Since when every delivery has failed (None: the last one succeeded): a long failure disables it.
    failing_since: Mapped[float | None] = mapped_column(Float)
    # Leave out the events its own creator caused: an integration hears only of changes it did not make.
    exclude_own: Mapped[bool] = mapped_column(Boolean, default=False)


class PendingAnchor(Base):
    """A chain head committed with its events and not yet anchored in an audit log kept in another database:
    anchored and deleted right after the commit, or at the next start (or clock tick) if that failed."""

    __tablename__ = "pending_anchors"

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(32))
    head: Mapped[str] = mapped_column(String(64))
    length: Mapped[int] = mapped_column(Integer)
    actor: Mapped[str] = mapped_column(String(100))


class OutboxMessage(Base):
    """One event for one subscription, written in the transaction that made the event: delivered from here
    (and retried, and kept as the delivery log), so nothing committed is lost to a crash."""

    __tablename__ = "webhook_outbox"
    # What the deliverer looks for many times a second: a subscription's pending messages, in order.
    __table_args__ = (Index("ix_webhook_outbox_pending", "state", "subscription_id", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    subscription_id: Mapped[int] = mapped_column(ForeignKey("webhook_subscriptions.id"), index=True)
    event_id: Mapped[str] = mapped_column(String(64), index=True)
    event_type: Mapped[str] = mapped_column(String(80))
    # Deliveries with one key go out in order (a work order's events); empty: no order to keep.
    ordering_key: Mapped[str] = mapped_column(String(100), index=True)
    body: Mapped[str] = mapped_column(Text)  # the CloudEvent, structured JSON: the very bytes signed
    created_at: Mapped[float] = mapped_column(Float)
    state: Mapped[str] = mapped_column(String(12))  # pending, delivered, dead
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[float] = mapped_column(Float, index=True)
    delivered_at: Mapped[float | None] = mapped_column(Float)
    last_status: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    last_latency_ms: Mapped[float | None] = mapped_column(Float)
