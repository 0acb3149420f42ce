"""Anomalies and device alarms in, coded and dispatched work orders out.

Alarm hygiene kept here (ISA-18.2):
* one open work order per dedup key (device + failure mode): repeats add
  occurrences and may raise the priority, never a new ticket;
* anomalies of one asset within ``group_window_s`` of the last finding of an
  open work order join it as related findings: one incident, one ticket;
* a cleared condition is recorded on the ticket, never closes it.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Protocol

from sqlalchemy import Row, Select, and_, case, delete, func, insert, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from gateway.core import (
    DEVICE_OFFLINE_CODE, Alarm, Anomaly, Asset, Criticality, Reading, Severity, WorkOrderEvent,
)
from ticketing.coding import check_closure
from ticketing.config import EngineerConfig, NoticeRule, TicketingConfig
from ticketing import chain, outbox, queries, signoff
from ticketing import notices, routing
from ticketing.cloudevents import Envelope, alarm_envelope, anomaly_envelope, notice_envelope, work_order_envelope
from ticketing.webhooks import SecretVault, WebhookStore
from ticketing import sla as clocks
from ticketing.dispatch import (Commitment, Decision, Fleet, Job, choose_engineer, grade, plan_fleet,
                                planned_route, reachable_since, routing_problems)
from ticketing.lifecycle import OPEN_STATES, State, check_transition
from ticketing.planner import PlannerProcess
from ticketing.database import make_engine, make_reader, migrate
from ticketing.hygiene import ChatterTracker
from ticketing.models import (AlarmOutcome, AlarmRecord, AnomalyRecord, AssetState, CodeCounter, EngineerLocation,
                              Event, Origin, PendingAnchor, ServiceReport, SignatureDrawing, WorkOrder)

log = logging.getLogger(__name__)

SYSTEM_ACTOR = "pm-gateway"
_FIXED = [State.DONE.value, State.VERIFIED.value, State.ARCHIVED.value]
# Open and nobody has set off yet: dispatch may still move these (when not accepted).
_UNSTARTED = [State.DISPATCHED.value, State.RECEIVED.value, State.DIAGNOSED.value, State.REOPENED.value]
# In an engineer's day plan, waiting its turn; and the work that keeps an engineer busy now.
_PLANNED = [State.DISPATCHED.value]
_STARTED = [State.EN_ROUTE.value, State.ON_SITE.value, State.IN_PROGRESS.value]
_IN_A_PLAN = frozenset(_PLANNED + _STARTED)
# What an alarm that may open a work order comes to: journalled in the transaction that decided it.
_RECORDED_WHERE_DECIDED = (AlarmOutcome.WORK_ORDER, AlarmOutcome.NOT_OPERATING)
_EVENT_COLUMNS = tuple(column.key for column in Event.__table__.columns if column.key != "id")  # id: the database's
# Impact (ISO 14224) from the finding's severity: caught early is incipient.
_IMPACT = {Severity.CRITICAL: "critical", Severity.HIGH: "degraded", Severity.MEDIUM: "incipient",
           Severity.LOW: "incipient"}


def _day_plan_rows() -> Select[Any]:
    sla, context = WorkOrder.sla, WorkOrder.context
    return select(
        WorkOrder.id, WorkOrder.code, WorkOrder.assigned_engineer_id, WorkOrder.device_id, WorkOrder.priority,
        WorkOrder.state, WorkOrder.eta, WorkOrder.accepted_at, sla[("met", "on_site")].as_float(),
        sla[("started_at",)].as_float(), sla[("budget_s", "on_site")].as_float(), sla[("paused_s",)].as_float(),
        sla[("paused_since",)].as_float(), context[("finding", "appointment", "start")].as_float(),
        context[("finding", "appointment", "end")].as_float(),
    ).where(WorkOrder.state.in_(queries.OPEN), WorkOrder.assigned_engineer_id.is_not(None))


# Every open order's part in the day plans: built once, not on every dispatch (0.3 ms each time).
_DAY_PLAN_ROWS = _day_plan_rows()


class TransitionRefused(Exception):
    """An illegal or incomplete transition; the message says why."""


# Priority from severity x asset criticality (P1 most urgent).
_PRIORITY: dict[tuple[Severity, Criticality], str] = {
    (Severity.CRITICAL, Criticality.HIGH): "P1",
    (Severity.CRITICAL, Criticality.MEDIUM): "P1",
    (Severity.CRITICAL, Criticality.LOW): "P2",
    (Severity.HIGH, Criticality.HIGH): "P1",
    (Severity.HIGH, Criticality.MEDIUM): "P2",
    (Severity.HIGH, Criticality.LOW): "P3",
    (Severity.MEDIUM, Criticality.HIGH): "P2",
    (Severity.MEDIUM, Criticality.MEDIUM): "P3",
    (Severity.MEDIUM, Criticality.LOW): "P4",
    (Severity.LOW, Criticality.HIGH): "P3",
    (Severity.LOW, Criticality.MEDIUM): "P4",
    (Severity.LOW, Criticality.LOW): "P4",
}


def priority_for(severity: Severity, criticality: Criticality) -> str:
    return _PRIORITY[(severity, criticality)]


def _on_site_deadline(sla: dict[str, Any] | None, now: float) -> float | None:
    """When the order must be on site by, while that clock still runs."""
    if sla is None or "on_site" in sla["met"]:
        return None
    return clocks.deadline(sla, "on_site", now)


def _planning_view(order: WorkOrder) -> tuple[Any, ...]:
    """What a re-plan decided on: an order whose view changed while the plan was made is left as it is."""
    return (order.state, order.assigned_engineer_id, order.accepted_at, order.offered_at, tuple(order.declined or []),
            (order.assignment or {}).get("planned_engineer_id"))


def _routing_escalation_due(routed: dict[str, Any], accepted_at: float | None, created_at: float, now: float) -> bool:
    """A routing rule's "escalate after" has run out on an order nobody accepted, and nobody was told yet."""
    after = routed.get("escalate_after_s")
    return (after is not None and accepted_at is None and now - created_at >= after
            and not routed.get("escalated_at"))


def _reading_dict(reading: Reading) -> dict[str, Any]:
    return {"metric": reading.metric, "value": reading.value, "timestamp": reading.timestamp,
            "quality": reading.quality.value}


@dataclass
class Intake:
    """One finding on its way to a work order."""

    asset: Asset
    failure_mode: str
    origin: Origin
    severity: Severity
    title: str
    finding: dict[str, Any]
    at: float
    mechanism: str = ""
    item: str = ""
    evidence: list[Reading] = field(default_factory=list)
    due_at: float | None = None
    # Join the asset's open incident (off for the instrument ticket of a chattering signal).
    group: bool = True
    # Who raised it: the gateway itself, or the signed-in person or system of a manual order.
    actor: str = SYSTEM_ACTOR
    # The external system's reference of a manual order: a new order carries it from its first event.
    external_ref: str | None = None


class GatewayKeys(chain.ChainSigner, signoff.SignatureKeys, SecretVault, Protocol):
    """The keyring as ticketing uses it: chain MACs, signers' keys, sealed webhook secrets."""


class TicketingService:
    def __init__(
        self,
        config: TicketingConfig,
        assets: dict[str, Asset],
        engineers: list[EngineerConfig],
        publish: Callable[[WorkOrderEvent], None] | None = None,
        clock: Callable[[], float] = time.time,
        telemetry_seen: Callable[[str], float | None] | None = None,
        *,
        signer: GatewayKeys,
        anchors: chain.ChainAnchors,
        operating_means: Callable[[str, float, float], dict[str, float]] | None = None,
        recent_readings: Callable[[str, float, int], list[Reading]] | None = None,
        event_source: str = "urn:pm-gateway",
    ) -> None:
        self.config = config
        # Keyed event chains: MACs from the gateway's keyring, heads anchored in its audit log.
        self.signer = signer
        self.anchors = anchors
        # When a device last reported (auto-verification wants telemetry, not silence).
        self.telemetry_seen = telemetry_seen
        # (device, since, until) -> each metric's mean: the operating context a new order records.
        self.operating_means = operating_means
        # (device, until, how many) -> its newest readings: the evidence of an order a device alarm (or a
        # person) raised, which comes without readings of its own.
        self.recent_readings = recent_readings
        self.context_errors = 0
        self.assets = assets
        self.engineers = engineers
        self._engineers_by_id = {engineer.id: engineer for engineer in engineers}
        self.publish = publish or (lambda event: None)
        self.clock = clock
        self.engine = make_engine(config.database_url)
        self.schema_revision = migrate(self.engine)
        self.planner = PlannerProcess()
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)
        self.reader = make_reader(config.database_url, self.engine)
        self.reads = sessionmaker(self.reader, expire_on_commit=False)
        # CloudEvents 'source' of what this gateway publishes; webhook subscriptions and their outbox.
        self.event_source = event_source
        self.webhooks = WebhookStore(self.sessions, self.reads, self.clock, event_source, signer)
        self.created = 0
        self.occurrences = 0
        self.ignored: dict[str, int] = {}
        self._last_reoptimised = self.clock()
        self.reopened = 0
        self.flood_findings = 0
        self.auto_verified = 0
        hygiene = config.hygiene
        self.chatter = ChatterTracker(hygiene.chatter_cycles, hygiene.chatter_window_s, hygiene.shelve_s)
        self._pending_seen: set[tuple[Any, ...]] = set()  # noted heads as the last clock tick found them
        self._anchor_pending_or_later(at_start=True)

    def reconfigure(self, config: TicketingConfig, assets: dict[str, Asset], engineers: list[EngineerConfig]) -> None:
        """New rules, registry and roster without a restart: each later finding, tick and decision uses them;
        open orders keep what they were opened with (their SLA policy, required skill) and are re-dispatched
        under the new rules at the next re-optimisation. The database stays (``database_url`` needs a restart)."""
        if config.database_url != self.config.database_url:
            raise ValueError("ticketing.database_url cannot change while running")
        hygiene = config.hygiene
        if (hygiene.chatter_cycles, hygiene.chatter_window_s, hygiene.shelve_s) != (
                self.config.hygiene.chatter_cycles, self.config.hygiene.chatter_window_s, self.config.hygiene.shelve_s):
            self.chatter = ChatterTracker(hygiene.chatter_cycles, hygiene.chatter_window_s, hygiene.shelve_s)
        # One assignment each, so a reader sees the old or the new set, never half of each.
        self.config, self.assets, self.engineers = config, assets, engineers
        self._engineers_by_id = {engineer.id: engineer for engineer in engineers}

    # -- intake ------------------------------------------------------------------------

    def handle_anomaly(self, anomaly: Anomaly) -> str | None:
        asset = self._asset(anomaly.device_id)
        if asset is None:
            return None
        detector = {"detector": anomaly.detector, "score": anomaly.score, "message": anomaly.message,
                    "metrics": anomaly.metrics, "severity": anomaly.severity.value}
        if anomaly.due_at is not None:
            detector["due_at"] = anomaly.due_at
        if anomaly.limit is not None:
            detector["limit"] = anomaly.limit
        code = self._raise(Intake(
            asset=asset, failure_mode=anomaly.failure_mode, mechanism=anomaly.failure_mechanism,
            item=anomaly.maintainable_item, severity=anomaly.severity,
            origin=Origin.PREDICTIVE if anomaly.due_at is not None else Origin.ANOMALY,
            title=f"{anomaly.failure_mode} on {asset.id}: {anomaly.message}",
            evidence=anomaly.evidence, finding=detector, at=anomaly.detected_at, due_at=anomaly.due_at,
        ), also=lambda session, code: self._record_anomaly(session, asset, anomaly, code))
        return code

    def _record_anomaly(self, session: Session, asset: Asset, anomaly: Anomaly, code: str | None) -> None:
        """The anomaly in the journal, and its event for other systems, in the transaction that ticketed it."""
        record = AnomalyRecord(
            device_id=anomaly.device_id, detected_at=anomaly.detected_at, detector=anomaly.detector,
            score=anomaly.score, severity=anomaly.severity.value, failure_mode=anomaly.failure_mode,
            metrics=anomaly.metrics, message=anomaly.message, work_order_code=code,
        )
        session.add(record)
        session.flush()
        session.info["envelopes"].append(anomaly_envelope(
            self.event_source, record.id, record.device_id, asset.site.id, record.detected_at, record.detector,
            record.score, record.severity, record.failure_mode, record.metrics, record.message, code))

    def handle_alarm(self, alarm: Alarm) -> str | None:
        asset = self._asset(alarm.device_id)
        if asset is None:
            return None
        outcome, code = self._ticket_alarm(asset, alarm)
        if outcome not in _RECORDED_WHERE_DECIDED:
            with self._transaction() as session:
                self._record_alarm(session, asset, alarm, outcome, code)
        # A clear is recorded against the order it cleared, but opens nothing: callers get no code for it.
        return None if outcome is AlarmOutcome.CLEARED else code

    def _record_alarm(self, session: Session, asset: Asset, alarm: Alarm, outcome: AlarmOutcome,
                      code: str | None) -> None:
        """The alarm in the journal, with what became of it, and its event for other systems."""
        record = AlarmRecord(
            device_id=alarm.device_id, at=alarm.raised_at, code=alarm.code[:40], active=alarm.active,
            severity=alarm.severity.value, message=alarm.message, source=alarm.source[:200],
            outcome=outcome.value, work_order_code=code,
        )
        session.add(record)
        session.flush()
        session.info["envelopes"].append(alarm_envelope(
            self.event_source, record.id, record.device_id, asset.site.id, record.at, record.code, record.active,
            record.severity, record.message, record.source, record.outcome, code, DEVICE_OFFLINE_CODE))

    def _ticket_alarm(self, asset: Asset, alarm: Alarm) -> tuple[AlarmOutcome, str | None]:
        """What becomes of the alarm. An alarm that may open a work order is journalled in the transaction that
        decides (``_RECORDED_WHERE_DECIDED``): one commit on the path the latency target is measured on, and
        never an order without its alarm after a crash."""
        failure_mode, mechanism = alarm.code, ""
        if alarm.code == DEVICE_OFFLINE_CODE:
            offline = self.config.device_offline
            failure_mode, mechanism = offline.failure_mode, offline.failure_mechanism
            if not offline.open_work_order:
                self._ignore("device_offline" if alarm.active else "device_online",
                             f"{alarm.device_id}: {alarm.message} (ticketing.device_offline.open_work_order is off)")
                return AlarmOutcome.NOT_TICKETED, None
        signal = (alarm.device_id, alarm.code)
        if self.chatter.shelved(signal, alarm.raised_at):
            self._ignore("shelved_chattering", f"{alarm.device_id}: {alarm.code} is shelved (chattering)")
            return AlarmOutcome.SHELVED, None
        if self.chatter.edge(signal, alarm.active, alarm.raised_at):
            return AlarmOutcome.CHATTERING, self._chattering(asset, alarm)
        if not alarm.active:
            return AlarmOutcome.CLEARED, self._record_cleared(alarm, failure_mode)
        finding = {"alarm_code": alarm.code, "message": alarm.message, "severity": alarm.severity.value,
                   "source": alarm.source}
        if alarm.condition_id:
            finding["condition_id"] = alarm.condition_id

        def record(session: Session, code: str | None) -> None:
            # _raise answers None only for an asset that is not operating (maintenance, standby, commissioning).
            outcome = AlarmOutcome.WORK_ORDER if code is not None else AlarmOutcome.NOT_OPERATING
            self._record_alarm(session, asset, alarm, outcome, code)

        code = self._raise(Intake(
            asset=asset, failure_mode=failure_mode, mechanism=mechanism, origin=Origin.DEVICE_ALARM,
            severity=alarm.severity, title=f"{alarm.code} alarm on {asset.id}: {alarm.message}",
            finding=finding, at=alarm.raised_at,
        ), also=record)
        return (AlarmOutcome.WORK_ORDER, code) if code is not None else (AlarmOutcome.NOT_OPERATING, None)

    def create_manual(self, device_id: str, failure_mode: str, severity: Severity, title: str, actor: str,
                      description: str = "", external_ref: str | None = None,
                      appointment: tuple[float, float] | None = None) -> str | None:
        """A work order a person or an external system opens. With ``external_ref`` (the other system's own
        reference) a second request with the same reference finds the first order instead of adding to it,
        and the order raised (or joined: an open one of the same asset and failure mode) carries it. With an
        ``appointment`` (start, end) the visit is planned to begin inside that window."""
        if external_ref:
            known = self.code_of_reference(external_ref)
            if known is not None:
                return known
        asset = self._asset(device_id)
        if asset is None:
            return None
        code = self._raise(Intake(
            asset=asset, failure_mode=failure_mode, origin=Origin.MANUAL, severity=severity, title=title,
            finding={"opened_by": actor, "description": description,
                     **({"external_ref": external_ref} if external_ref else {}),
                     **({"appointment": {"start": appointment[0], "end": appointment[1]}} if appointment else {})},
            at=self.clock(), actor=actor,
            external_ref=external_ref,
        ))
        if code is not None and external_ref:
            return self._attach_reference(code, external_ref, actor)
        return code

    def code_of_reference(self, external_ref: str) -> str | None:
        with self.reads() as session:
            return session.scalar(select(WorkOrder.code).where(WorkOrder.external_ref == external_ref))

    def _attach_reference(self, code: str, external_ref: str, actor: str) -> str:
        try:
            with self._transaction() as session:
                order = self._locked(session, code)
                assert order is not None
                if order.external_ref == external_ref:
                    return code
                if order.external_ref is not None:
                    raise TransitionRefused(f"the open {code} (same asset and failure mode) already carries the "
                                            f"reference {order.external_ref!r}; it cannot also be {external_ref!r}")
                order.external_ref = external_ref
                self._append_event(session, order, "external_reference", actor, {"external_ref": external_ref})
        except IntegrityError:  # another request with this reference got there first
            known = self.code_of_reference(external_ref)
            if known is None:
                raise
            return known
        return code

    def _chattering(self, asset: Asset, alarm: Alarm) -> str | None:
        """A chattering alarm is an instrument problem: one AIR ticket, the signal shelved."""
        hygiene = self.config.hygiene
        message = (f"{alarm.code} alarm chattering ({hygiene.chatter_cycles} on/off cycles within "
                   f"{hygiene.chatter_window_s:.0f} s); shelved for {hygiene.shelve_s:.0f} s")
        with self._transaction() as session:
            # The order the chattering signal itself just opened becomes the instrument ticket.
            own = session.scalar(select(WorkOrder).where(
                WorkOrder.open_dedup_key == f"{asset.id}:{alarm.code}",
                WorkOrder.created_at >= self.clock() - hygiene.chatter_window_s).with_for_update())
            if own is not None and session.scalar(select(WorkOrder.id).where(
                    WorkOrder.open_dedup_key == f"{asset.id}:AIR")) is None:
                self._append_event(session, own, "reclassified", SYSTEM_ACTOR, {
                    "from": own.failure_mode, "to": "AIR", "reason": message})
                own.failure_mode, own.failure_mechanism, own.maintainable_item = "AIR", "3.3 faulty signal", "instrument"
                own.dedup_key = own.open_dedup_key = f"{asset.id}:AIR"
                own.title = f"AIR on {asset.id}: {message}"[:300]
                own.required_skill = self.config.required_skills.get("AIR", self.config.default_skill)
                return own.code
        return self._raise(Intake(
            asset=asset, failure_mode="AIR", mechanism="3.3 faulty signal", item="instrument",
            origin=Origin.DEVICE_ALARM, severity=Severity.LOW, title=f"AIR on {asset.id}: {message}",
            finding={"alarm_code": alarm.code, "message": message, "source": alarm.source},
            at=alarm.raised_at, group=False,
        ))

    def _evidence(self, intake: Intake) -> list[Reading]:
        wanted = self.config.evidence_readings
        if intake.evidence or self.recent_readings is None or wanted <= 0:
            return intake.evidence[-wanted:] if wanted > 0 else []
        try:
            return self.recent_readings(intake.asset.id, intake.at, wanted)
        except Exception as error:  # a store that cannot answer must not cost the work order
            self.context_errors += 1
            log.warning("ticketing: no recent readings for %s: %s", intake.asset.id, error)
            return []

    def _operating_context(self, device_id: str, at: float) -> dict[str, Any] | None:
        hours = self.config.operating_context_h
        if self.operating_means is None or hours <= 0:
            return None
        try:
            means = self.operating_means(device_id, at - hours * 3600, at)
        except Exception as error:  # a store that cannot answer must not cost the work order
            self.context_errors += 1
            log.warning("ticketing: no operating context for %s: %s", device_id, error)
            return None
        return {"window_h": hours, "until": at, "means": {metric: round(value, 4) for metric, value in sorted(means.items())}}

    def _asset(self, device_id: str) -> Asset | None:
        asset = self.assets.get(device_id)
        if asset is None:
            self._ignore("unknown_device", f"no asset {device_id!r}; finding not ticketed")
        return asset

    def _ignore(self, why: str, message: str) -> None:
        self.ignored[why] = self.ignored.get(why, 0) + 1
        log.warning("ticketing: %s", message)

    # -- work orders -------------------------------------------------------------------

    def _raise(self, intake: Intake, also: Callable[[Session, str | None], None] | None = None) -> str | None:
        """One finding to a work order: suppressed, joined to an open one, a reopen, a site flood, or new.
        ``also(session, code)`` runs once, in the transaction that decided (the finding's own journal entry)."""
        asset = intake.asset
        dedup_key = f"{asset.id}:{intake.failure_mode}"
        priority = priority_for(intake.severity, asset.criticality)
        routed = self._route(intake, priority)
        if routed.suppressed_by is not None:
            self._ignore(f"routing:{routed.suppressed_by}"[:80], f"{asset.id}: {intake.failure_mode} suppressed by "
                         f"routing rule {routed.suppressed_by!r}")
            if also is not None:
                with self._transaction() as session:
                    also(session, None)
            return None
        priority = routed.priority or priority
        for attempt in range(3):
            try:
                with self._transaction() as session:
                    code = self._decide(session, intake, dedup_key, priority, routed)
                    if also is not None:
                        also(session, code)
                return code
            except IntegrityError:
                # Another writer opened the same key first: retry as a repeat (codes cannot clash: one upsert).
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _decide(self, session: Session, intake: Intake, dedup_key: str, priority: str,
                routed: routing.Outcome) -> str | None:
        asset = intake.asset
        state = self._suppressing_state(session, asset.id)
        if state is not None:
            self._ignore(f"asset_{state.state}", f"{asset.id} is in {state.state} ({state.reason}): "
                         f"{intake.failure_mode} not ticketed")
            return None
        existing = self._open_for(session, asset.id, dedup_key, intake.at, intake.group)
        if existing is not None:
            return self._add_occurrence(session, existing, intake.failure_mode, priority, intake.finding, intake.at)
        closed = session.scalar(
            select(WorkOrder).where(WorkOrder.dedup_key == dedup_key, WorkOrder.closed_at.is_not(None))
            .order_by(WorkOrder.closed_at.desc()).limit(1).with_for_update())
        now = self.clock()
        if (closed is not None and closed.state in (State.DONE.value, State.VERIFIED.value)
                and now - closed.closed_at < self.config.hygiene.cooldown_s):
            return self._reopen(session, closed, intake, priority)
        flood = self._flood_incident(session, asset.site.id, now) if intake.group else None
        if flood is not None:
            self.flood_findings += 1
            return self._add_occurrence(session, flood, intake.failure_mode, priority,
                                        intake.finding | {"device_id": asset.id}, intake.at, kind="site_flood_finding")
        repeat_of = None
        if (closed is not None and closed.state in _FIXED
                and now - closed.closed_at <= self.config.hygiene.repeat_window_s):
            repeat_of = closed.code
        return self._create(session, intake, dedup_key, priority, repeat_of, routed)

    def _current_state(self, session: Session, asset_id: str) -> AssetState | None:
        """The asset's non-operating state, unless it has run out."""
        row = session.get(AssetState, asset_id)
        if row is None or (row.until is not None and row.until <= self.clock()):
            return None
        return row

    def _suppressing_state(self, session: Session, asset_id: str) -> AssetState | None:
        row = self._current_state(session, asset_id)
        return row if row is not None and row.state in self.config.hygiene.suppress_states else None

    def _open_for(self, session: Session, device_id: str, dedup_key: str, at: float, group: bool) -> WorkOrder | None:
        """The open order of the same key; else, when grouping, the asset's oldest open order still within the
        group window. Compared on the findings' own clock (device time), not the wall clock: an incident
        stays one while its findings keep coming within the window. One query, locking the one it answers."""
        same_key = WorkOrder.open_dedup_key == dedup_key
        found = same_key
        if group:
            found = or_(same_key, and_(WorkOrder.device_id == device_id, WorkOrder.state.in_(queries.OPEN),
                                       WorkOrder.last_occurrence_at >= at - self.config.group_window_s))
        return session.scalar(select(WorkOrder).where(found).order_by(case((same_key, 0), else_=1), WorkOrder.created_at)
                              .limit(1).with_for_update())

    def _flood_incident(self, session: Session, site_id: str, now: float) -> WorkOrder | None:
        """In a flood (many new orders at a site in a short time), the site's one incident; else None."""
        hygiene = self.config.hygiene
        recent = session.scalar(select(func.count()).select_from(WorkOrder).where(
            WorkOrder.site_id == site_id, WorkOrder.created_at >= now - hygiene.flood_window_s))
        if recent < hygiene.flood_threshold:
            return None
        incident = session.scalar(
            select(WorkOrder).where(WorkOrder.site_id == site_id, WorkOrder.state.in_(queries.OPEN))
            .order_by(WorkOrder.scope.desc(), WorkOrder.created_at.desc(), WorkOrder.id.desc()).limit(1)
            .with_for_update())
        if incident is not None and incident.scope != "site":
            incident.scope = "site"
            self._append_event(session, incident, "site_incident", SYSTEM_ACTOR, {
                "site_id": site_id, "reason": f"{recent} work orders at {site_id} within "
                                              f"{hygiene.flood_window_s:.0f} s: flood mode, further findings "
                                              "at the site join this incident"})
        return incident

    def _reopen(self, session: Session, order: WorkOrder, intake: Intake, priority: str) -> str:
        """A recurrence soon after closing: the same order again (it counts against first-time fix)."""
        now = self.clock()
        self._append_event(session, order, "reopened", SYSTEM_ACTOR, {
            "from": order.state, "to": State.REOPENED.value, "finding": intake.finding,
            "reason": f"recurrence {now - (order.closed_at or now):.0f} s after closing, within the cooldown"})
        order.state, order.open_dedup_key, order.closed_at = State.REOPENED.value, order.dedup_key, None
        order.occurrences += 1
        order.last_occurrence_at = intake.at
        order.priority = min(order.priority, priority)
        order.declined, order.accepted_at, order.escalation_level = [], None, 0
        order.sla = self._start_clocks(order.priority, intake.asset, now)
        self._dispatch(session, order, why="reopened")
        self.reopened += 1
        return order.code

    def _start_clocks(self, priority: str, asset: Asset, now: float) -> dict[str, Any]:
        criticality = asset.criticality.value
        return clocks.start_clocks(self.config.sla.policy_for(priority, criticality), f"{priority}/{criticality}", now)

    def _add_occurrence(
        self, session: Session, order: WorkOrder, failure_mode: str, priority: str,
        finding: dict[str, Any], at: float, kind: str | None = None,
    ) -> str:
        order.occurrences += 1
        order.last_occurrence_at = max(order.last_occurrence_at, at)
        order.updated_at = self.clock()
        data: dict[str, Any] = {"occurrence": order.occurrences, "failure_mode": failure_mode, "finding": finding}
        if priority < order.priority:  # "P1" < "P2": a more urgent repeat raises the order
            data["priority_raised"] = {"from": order.priority, "to": priority}
            order.priority = priority
            if order.sla is not None:
                asset = self.assets.get(order.device_id)
                criticality = asset.criticality.value if asset else order.sla["policy"].split("/")[-1]
                name = f"{priority}/{criticality}"
                data["sla_policy"] = {"from": order.sla["policy"], "to": name}
                order.sla = clocks.retarget(order.sla, self.config.sla.policy_for(priority, criticality), name)
        kind = kind or ("occurrence" if failure_mode == order.failure_mode else "related_finding")
        self._append_event(session, order, kind, SYSTEM_ACTOR, data)
        self.occurrences += 1
        return order.code

    def _next_code(self, session: Session, at: float) -> str:
        day = datetime.fromtimestamp(at, timezone.utc).strftime("%Y%m%d")
        # One statement (an upsert that answers the number), which also takes the day's row lock.
        upsert = (postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert)(CodeCounter)
        number = session.scalar(upsert.values(day=day, last=1).on_conflict_do_update(
            index_elements=[CodeCounter.day], set_={"last": CodeCounter.last + 1}).returning(CodeCounter.last))
        return f"{self.config.code_prefix}-{day}-{number:04d}"

    def _route(self, intake: Intake, priority: str) -> routing.Outcome:
        """What the routing rules decide about this finding (nothing when none match)."""
        if not self.config.routing:
            return routing.Outcome()
        asset = intake.asset
        facts = routing.Facts(priority=priority, site=asset.site.id, device_type=asset.type,
                              failure_mode=intake.failure_mode, criticality=asset.criticality.value,
                              origin=intake.origin.value, at=self._now())
        return routing.evaluate(self.config.routing, facts)

    def _create(self, session: Session, intake: Intake, dedup_key: str, priority: str, repeat_of: str | None,
                routed: routing.Outcome | None = None) -> str:
        now = self.clock()
        asset, failure_mode = intake.asset, intake.failure_mode
        routed = routed or routing.Outcome()
        template = self.config.templates.get(routed.template) if routed.template else None
        skill = (routed.skill or (template.skill if template else None)
                 or self.config.required_skills.get(failure_mode, self.config.default_skill))
        title = f"{template.title}: {intake.title}" if template and template.title else intake.title
        context: dict[str, Any] = {
            "asset": asset.as_dict(),
            "finding": intake.finding,
            "triggering_readings": [_reading_dict(r) for r in self._evidence(intake)],
        }
        if routed.matched:
            context["routing"] = routed.as_dict()
        if template is not None:
            context["template"] = {"name": routed.template, **template.model_dump()}
        operating = self._operating_context(asset.id, intake.at)
        if operating is not None:
            context["operating"] = operating
        sla = self._start_clocks(priority, asset, now)
        if intake.due_at is not None and intake.due_at > now:
            # Preventive work: restored (the part replaced) before the forecast failure, at the latest.
            sla["budget_s"]["restore"] = min(sla["budget_s"]["restore"], intake.due_at - now)
        order = WorkOrder(
            code=self._next_code(session, now), open_dedup_key=dedup_key, dedup_key=dedup_key,
            device_id=asset.id, site_id=asset.site.id, origin=intake.origin.value, failure_mode=failure_mode,
            failure_mechanism=intake.mechanism, maintainable_item=intake.item, priority=priority,
            state=State.RECEIVED.value, title=title[:300], required_skill=skill, occurrences=1,
            context=context, created_at=now, updated_at=now, last_occurrence_at=intake.at,
            impact=_IMPACT[intake.severity], required_level=self.config.required_skill_levels.get(failure_mode, 1),
            required_certifications=self.config.required_certifications.get(failure_mode, []), declined=[],
            sla=sla, repeat_of=repeat_of, due_at=intake.due_at, scope="asset", external_ref=intake.external_ref,
        )
        session.add(order)
        session.flush()
        session.info["chains"][order.id] = (order, chain.GENESIS_HASH, 0, [])  # new: no stored events to look up
        # The suggested coding, kept apart from the order's (which the engineer confirms or corrects at DONE).
        created = {"origin": intake.origin.value, "failure_mode": failure_mode, "priority": priority,
                   "detected_at": intake.at, "failure_mechanism": intake.mechanism,
                   "maintainable_item": intake.item}
        if repeat_of:
            created["repeat_of"] = repeat_of
        if intake.due_at is not None:
            created["due_at"] = intake.due_at
        if routed.matched:
            created["routing"] = routed.as_dict()
        self._append_event(session, order, "created", intake.actor, created)
        if routed.notify:
            self._append_event(session, order, "routed", SYSTEM_ACTOR,
                               {"rules": routed.matched, "notify": routed.notify})
        self._dispatch(session, order)
        self.created += 1
        log.info("work order %s opened for %s (%s, %s)", order.code, asset.id, failure_mode, priority)
        return order.code

    # -- dispatch ---------------------------------------------------------------------

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), timezone.utc)

    def _job(self, order: WorkOrder) -> Job:
        site = self.assets[order.device_id].site
        appointment = ((order.context or {}).get("finding") or {}).get("appointment") or {}
        return Job(order.required_skill, order.required_level, tuple(order.required_certifications),
                   (site.latitude, site.longitude), order.priority, order.device_id,
                   _on_site_deadline(order.sla, self.clock()),
                   frozenset(order.declined or []), key=order.code, not_before=appointment.get("start"),
                   not_after=appointment.get("end"))

    def _fleet(self, session: Session, orders: list[WorkOrder]) -> Fleet:
        """What dispatch needs to know to place ``orders``: engineers' loads and day plans without them, where
        each is (the job in hand's site, else last known location) and until when, and who fixed these orders'
        assets before."""
        locations = {row.engineer_id: (row.latitude, row.longitude) for row in session.scalars(select(EngineerLocation))}
        history: dict[str, set[str]] = {}
        fixed = session.execute(select(WorkOrder.assigned_engineer_id, WorkOrder.device_id).where(
            WorkOrder.state.in_(_FIXED), WorkOrder.assigned_engineer_id.is_not(None),
            WorkOrder.device_id.in_({order.device_id for order in orders})))
        for engineer_id, device_id in fixed:
            history.setdefault(engineer_id, set()).add(device_id)
        fleet = Fleet(locations, {}, history)
        self._plans(session, fleet, {order.id for order in orders})
        return fleet

    def _plans(self, session: Session, fleet: Fleet, leave_out: set[int]) -> None:
        """Each engineer's open orders (``fleet.loads``) and the day plans as they say (see
        ``dispatch.plan_fleet``), without the orders in ``leave_out``."""
        # Columns, not orders, and not even whole JSON documents: this runs on every dispatch over every open
        # order, and loading whole orders made an alarm's dispatch grow with the open backlog. One query for
        # the loads and the plans: an alarm's dispatch is on the path the latency target is measured on.
        now, commitments, loads = self.clock(), [], fleet.loads
        # Plain rows (the ORM's row handling was a third of the query's time), so the session's pending
        # changes are flushed by hand first.
        session.flush()
        for (order_id, code, engineer_id, device_id, priority, state, eta, accepted_at, on_site_at, started_at,
             budget_s, paused_s, paused_since, not_before, not_after) in session.connection().execute(_DAY_PLAN_ROWS):
            if order_id in leave_out:
                continue
            loads[engineer_id] = loads.get(engineer_id, 0) + 1
            asset = self.assets.get(device_id)
            if asset is None or state not in _IN_A_PLAN:
                continue
            deadline = None
            if started_at is not None and on_site_at is None:
                deadline = clocks.deadline_of(started_at, budget_s, paused_s, paused_since, now)
            commitments.append(Commitment(
                code, engineer_id, (asset.site.latitude, asset.site.longitude), priority, state in _STARTED,
                on_site_at, eta, deadline, accepted_at is not None, not_before, not_after))
        plan_fleet(fleet, commitments, now, self.config.dispatch)

    def _dispatch(self, session: Session, order: WorkOrder, why: str = "") -> None:
        """Offer the order to the best engineer now, or escalate it to the dispatcher queue."""
        fleet = self._fleet(session, [order])
        decision = choose_engineer(self._job(order), self.engineers, fleet, self._now(), self.config.dispatch)
        self._assign(session, order, decision, why)

    def _assign(self, session: Session, order: WorkOrder, decision: Decision, why: str = "",
                replan_etas: bool = True) -> None:
        if decision.engineer_id is not None and not decision.offer_now(self.clock(), self.config.dispatch,
                                                                       order.priority):
            self._plan_only(session, order, decision, why)
            return
        previous = order.assigned_engineer_id
        # The weights belong to the explanation: a candidate's grades mean nothing without them.
        order.assignment = decision.as_dict() | {"weights": self.config.dispatch.weights[order.priority].model_dump()}
        reason = f"{why}: {decision.reason}" if why else decision.reason
        if decision.engineer_id is None:
            order.assigned_engineer_id = order.offered_at = order.eta = None
            if order.state == State.DISPATCHED.value:
                order.state = State.DIAGNOSED.value
            self._append_event(session, order, "escalated", SYSTEM_ACTOR,
                               {"queue": "dispatcher", "reason": reason, "excluded": decision.excluded})
            return
        now = self.clock()
        if order.assigned_engineer_id != decision.engineer_id or order.state != State.DISPATCHED.value:
            order.offered_at, order.accepted_at = now, None
        order.assigned_engineer_id = decision.engineer_id
        order.eta = decision.arrive_at
        from_state = order.state
        order.state = State.DISPATCHED.value
        if replan_etas:  # after every change of the order: its one UPDATE goes with the others' ETAs
            self._replan_etas(session, decision)
        self._append_event(session, order, "reassigned" if previous else "dispatched", SYSTEM_ACTOR, {
            "from": from_state, "to": State.DISPATCHED.value, "engineer_id": decision.engineer_id,
            "previous_engineer_id": previous, "eta": order.eta, "reason": reason,
            "candidates": decision.candidates[:3],
        })

    def _plan_only(self, session: Session, order: WorkOrder, decision: Decision, why: str) -> None:
        """Late commitment: the order is planned for an engineer who will not set off for a while, so nobody is
        asked yet; each re-plan may move it, and it is offered ``offer_ahead_min`` before the planned departure.
        An offer not yet accepted is withdrawn. An event only when the planned engineer changes."""
        ahead = (self.config.dispatch.offer_ahead_min or 0) * 60
        planned_before = (order.assignment or {}).get("planned_engineer_id")
        previous = order.assigned_engineer_id
        order.assignment = decision.as_dict() | {
            "weights": self.config.dispatch.weights[order.priority].model_dump(), "engineer_id": None,
            "planned_engineer_id": decision.engineer_id, "offer_at": (decision.depart_at or self.clock()) - ahead}
        order.assigned_engineer_id = order.offered_at = None
        order.eta = decision.arrive_at
        from_state = order.state
        if order.state == State.DISPATCHED.value:
            order.state = State.DIAGNOSED.value
        if previous is None and planned_before == decision.engineer_id:
            return
        reason = f"{why}: {decision.reason}" if why else decision.reason
        self._append_event(session, order, "planned", SYSTEM_ACTOR, {
            "from": from_state, "to": order.state, "engineer_id": decision.engineer_id,
            "previous_engineer_id": previous, "planned_arrival": decision.arrive_at,
            "offer_at": order.assignment["offer_at"], "reason": reason, "candidates": decision.candidates[:3]})

    def _offer_planned(self, session: Session, order: WorkOrder) -> None:
        """The planned engineer asks for their planned job before its offer time: it is offered to them now."""
        engineer_id = order.assignment["planned_engineer_id"]
        order.assignment = {**order.assignment, "engineer_id": engineer_id}
        order.assigned_engineer_id, order.offered_at = engineer_id, self.clock()
        from_state, order.state = order.state, State.DISPATCHED.value
        self._append_event(session, order, "dispatched", SYSTEM_ACTOR, {
            "from": from_state, "to": State.DISPATCHED.value, "engineer_id": engineer_id,
            "previous_engineer_id": None, "eta": order.eta,
            "reason": "the planned engineer took it before its offer time"})

    def _replan_etas(self, session: Session, decision: Decision) -> None:
        """The other jobs in the chosen engineer's plan move with the new one: their planned arrivals follow."""
        arrivals = {key: at for key, at in decision.plan}
        if len(arrivals) < 2:
            return
        # Only the two columns: whole orders (their device context above all) made each dispatch slower. Not
        # flushed first: the order being assigned has its own ETA set, and flushing it here updated it twice.
        with session.no_autoflush:
            moved = [{"id": order_id, "eta": arrivals[code]} for order_id, code, eta in session.execute(
                select(WorkOrder.id, WorkOrder.code, WorkOrder.eta).where(
                    WorkOrder.code.in_(arrivals), WorkOrder.assigned_engineer_id == decision.engineer_id,
                    WorkOrder.state.in_(_PLANNED))) if eta != arrivals[code]]
        if moved:
            session.execute(update(WorkOrder), moved)

    def day_plan(self, engineer_id: str) -> dict[str, Any] | None:
        """The engineer's planned jobs in order, timed as dispatch times them; None for an unknown engineer."""
        engineer = next((e for e in self.engineers if e.id == engineer_id), None)
        if engineer is None:
            return None
        now = self.clock()
        with self.reads() as session:
            fleet = self._fleet(session, [])
        plan = planned_route(engineer, fleet, now, self.config.dispatch)
        return {"engineer_id": engineer_id, "at": now, "free_from": plan["free_from"], "stops": plan["stops"],
                "drive_min": plan["drive_min"], "fits_shifts": plan["fits_shifts"]}

    def accept(self, code: str, engineer_id: str) -> dict[str, Any] | None:
        """The assigned engineer takes the job: the respond clock stops. The engineer a job is planned for (not
        offered yet: late commitment) may take it too, as if it had been offered."""
        with self._transaction() as session:
            order = self._locked(session, code)
            if order is None:
                return None
            planned = (order.assignment or {}).get("planned_engineer_id")
            if (order.assigned_engineer_id is None and planned == engineer_id and order.state in _UNSTARTED
                    and order.accepted_at is None):
                self._offer_planned(session, order)
            if order.state != State.DISPATCHED.value or order.assigned_engineer_id != engineer_id:
                raise TransitionRefused(f"{code} is not offered to {engineer_id} "
                                        f"(state {order.state}, assigned {order.assigned_engineer_id})")
            self._accepted(session, order, engineer_id)
        return self.get_work_order(code)

    def _accepted(self, session: Session, order: WorkOrder, actor: str) -> None:
        if order.accepted_at is not None:
            return
        order.accepted_at = self.clock()
        if order.sla is not None:
            order.sla = clocks.met(order.sla, "respond", order.accepted_at)
        self._append_event(session, order, "accepted", actor, {"engineer_id": order.assigned_engineer_id})

    def decline(self, code: str, engineer_id: str, reason: str) -> dict[str, Any] | None:
        """The offered engineer says no: the next candidate gets it (or the dispatcher queue)."""
        with self._transaction() as session:
            order = self._locked(session, code)
            if order is None:
                return None
            if order.state != State.DISPATCHED.value or order.assigned_engineer_id != engineer_id:
                raise TransitionRefused(f"{code} is not offered to {engineer_id}")
            order.declined = [*(order.declined or []), engineer_id]
            self._append_event(session, order, "declined", engineer_id, {"reason": reason})
            self._dispatch(session, order, why=f"{engineer_id} declined ({reason})")
        return self.get_work_order(code)

    def update_location(self, engineer_id: str, latitude: float, longitude: float) -> None:
        with self.sessions.begin() as session:
            row = session.get(EngineerLocation, engineer_id)
            if row is None:
                session.add(EngineerLocation(engineer_id=engineer_id, latitude=latitude, longitude=longitude,
                                             updated_at=self.clock()))
            else:
                row.latitude, row.longitude, row.updated_at = latitude, longitude, self.clock()

    def engineer_locations(self) -> dict[str, dict[str, float]]:
        with self.reads() as session:
            return {row.engineer_id: {"latitude": row.latitude, "longitude": row.longitude,
                                      "updated_at": row.updated_at}
                    for row in session.scalars(select(EngineerLocation))}

    def _locked(self, session: Session, code: str) -> WorkOrder | None:
        return session.scalar(select(WorkOrder).where(WorkOrder.code == code).with_for_update())

    def reoptimise(self) -> list[str]:
        """Re-plan every unstarted (offered, not accepted) or unassigned open order at once; returns the codes
        offered, moved or withdrawn (an offer taken back because the job is now planned for later).

        The plan is made outside any transaction: with hundreds of open orders it takes seconds, and holding
        the write lock that long held up every alarm meanwhile. What changed while it was made wins: an order
        that changed (accepted, declined, offered, closed) keeps what it got, and nobody is given more open
        orders than their capacity, whatever the plan assumed; both wait for the next re-plan. Planned
        arrivals may be off until then (they are advisory; the next dispatch times the routes again)."""
        with self.reads() as session:
            orders = list(session.scalars(
                select(WorkOrder).where(WorkOrder.state.in_(_UNSTARTED), WorkOrder.accepted_at.is_(None))
                .order_by(WorkOrder.created_at)))
            if not orders:
                return []
            fleet = self._fleet(session, orders)
            jobs = [self._job(order) for order in orders]
            seen = {order.code: _planning_view(order) for order in orders}
            current = {order.code: order.assigned_engineer_id for order in orders if order.assigned_engineer_id}
        decisions = self.planner.assign_batch(jobs, self.engineers, fleet, self._now(), self.config.dispatch, current)
        planned = {job.key: decision for job, decision in zip(jobs, decisions) if decision.engineer_id is not None}
        moved = []
        # Each engineer's last insertion carries their whole route as planned: every one of their orders'
        # arrivals is set from it once, not from each insertion in turn (a select and an update per order
        # made the re-plan's commit, which alarms wait for, grow with the backlog).
        routes: dict[str | None, Decision] = {}
        with self._transaction() as session:
            orders = [order for order in session.scalars(
                select(WorkOrder).where(WorkOrder.code.in_(planned)).order_by(WorkOrder.created_at).with_for_update())
                if _planning_view(order) == seen[order.code]]
            for order in self._within_capacity(orders, planned, queries.open_loads(session)):
                decision = planned[order.code]
                fullest = routes.get(decision.engineer_id)
                if fullest is None or len(decision.plan) > len(fullest.plan):
                    routes[decision.engineer_id] = decision
                if decision.engineer_id == order.assigned_engineer_id:
                    # Same engineer, perhaps another place in the plan: the planned arrival follows, no new offer.
                    order.eta = decision.arrive_at
                    continue
                before = order.assigned_engineer_id
                self._assign(session, order, decision, replan_etas=False)
                if order.assigned_engineer_id != before:  # offered, moved or withdrawn; re-planned only is quiet
                    moved.append(order.code)
            for decision in routes.values():
                self._replan_etas(session, decision)
        return moved

    def _within_capacity(self, orders: list[WorkOrder], planned: dict[str, Decision],
                         loads: dict[str, int]) -> list[WorkOrder]:
        """The orders whose planned moves leave nobody over capacity, counted against the loads as they are
        now (which the plan did not see if work came in meanwhile); a move into someone who would be over
        is not made, and that may undo a move out of someone else, so this repeats until nothing changes."""
        capacity = {engineer.id: engineer.capacity for engineer in self.engineers}
        while True:
            after = dict(loads)
            for order in orders:
                target = planned[order.code].engineer_id or ""
                if target != order.assigned_engineer_id:
                    after[target] = after.get(target, 0) + 1
                    if order.assigned_engineer_id is not None:
                        after[order.assigned_engineer_id] = after.get(order.assigned_engineer_id, 0) - 1
            over = {engineer_id for engineer_id, load in after.items() if load > capacity.get(engineer_id, 0)}
            kept = [order for order in orders if planned[order.code].engineer_id == order.assigned_engineer_id
                    or planned[order.code].engineer_id not in over]
            if len(kept) == len(orders):
                return kept
            orders = kept

    # -- the clock: acceptance timeouts, SLA alerts, periodic re-optimisation ------------------

    def tick(self) -> dict[str, list[str]]:
        """Run the time-driven rules once; the gateway calls this every ``sla.monitor_interval_s``."""
        self._anchor_pending_or_later()
        now = self.clock()
        timed_out, alerted = [], []
        due = self._due_on_the_clock(now)
        with self._transaction() as session:
            open_orders = session.scalars(select(WorkOrder).where(
                WorkOrder.code.in_(due), WorkOrder.state.in_(queries.OPEN)).with_for_update()).all() if due else []
            for order in open_orders:  # fetched first: the loop body queries and writes in the same session
                if self._offer_timed_out(order, now):
                    engineer_id = order.assigned_engineer_id or ""
                    order.declined = [*(order.declined or []), engineer_id]
                    self._append_event(session, order, "acceptance_timeout", SYSTEM_ACTOR, {
                        "engineer_id": engineer_id, "waited_s": round(now - order.offered_at, 1)})
                    self._dispatch(session, order, why=f"{engineer_id} did not answer")
                    timed_out.append(order.code)
                if order.sla is not None and self._sla_alerts(session, order, now):
                    alerted.append(order.code)
                self._routing_escalation(session, order, now)
        verified = self._auto_verify(now)
        moved: list[str] = []
        if now - self._last_reoptimised >= self.config.dispatch.reoptimise_interval_s:
            self._last_reoptimised = now
            moved = self.reoptimise()
        return {"acceptance_timeouts": timed_out, "sla_alerts": alerted, "reoptimised": moved,
                "auto_verified": verified}

    def _due_on_the_clock(self, now: float) -> list[str]:
        """The open orders the clock has something to do for (an offer timed out, an SLA alert, a routing
        escalation), found from a few columns: the orders themselves are locked and loaded only when there is
        something to do, so a quiet tick does not hold the write lock over every open order."""
        with self.reads() as session:
            rows = session.execute(select(
                WorkOrder.code, WorkOrder.state, WorkOrder.priority, WorkOrder.assigned_engineer_id,
                WorkOrder.offered_at, WorkOrder.accepted_at, WorkOrder.created_at, WorkOrder.sla,
                WorkOrder.context[("routing",)].label("routing"),
            ).where(WorkOrder.state.in_(queries.OPEN))).all()
        return [row.code for row in rows if (
            self._offer_timed_out(row, now)
            or (row.sla is not None and clocks.due_alerts(row.sla, now, self.config.sla.warn_at))
            or _routing_escalation_due(row.routing or {}, row.accepted_at, row.created_at, now))]

    def _offer_timed_out(self, order: WorkOrder | Row[Any], now: float) -> bool:
        return bool(order.state == State.DISPATCHED.value and order.accepted_at is None and order.offered_at
                    and self._unanswered_for(order, now) >= self.config.dispatch.acceptance_timeout_s)

    def _unanswered_for(self, order: WorkOrder | Row[Any], now: float) -> float:
        """How long the offered engineer could have answered: an offer for their next shift waits for it."""
        engineer = next((e for e in self.engineers if e.id == order.assigned_engineer_id), None)
        if engineer is None or order.offered_at is None:
            return now - (order.offered_at or now)
        since = reachable_since(engineer, order.priority, order.offered_at, now, self.config.dispatch)
        return 0.0 if since is None else now - since

    def _auto_verify(self, now: float) -> list[str]:
        """DONE, then normal for ``auto_verify_after_s``: no finding on the asset and telemetry flowing."""
        after = self.config.hygiene.auto_verify_after_s
        if after <= 0:
            return []
        verified = []
        with self._transaction() as session:
            done = session.scalars(select(WorkOrder).where(
                WorkOrder.state == State.DONE.value, WorkOrder.closed_at <= now - after).with_for_update())
            for order in list(done):
                since = order.closed_at or now
                newer = session.scalar(select(func.count()).select_from(AnomalyRecord).where(
                    AnomalyRecord.device_id == order.device_id, AnomalyRecord.detected_at >= since))
                other = session.scalar(select(func.count()).select_from(WorkOrder).where(
                    WorkOrder.device_id == order.device_id, WorkOrder.id != order.id, WorkOrder.created_at >= since))
                last_reading = self.telemetry_seen(order.device_id) if self.telemetry_seen else None
                if newer or other or (self.telemetry_seen is not None
                                      and (last_reading is None or last_reading < now - after / 2)):
                    continue
                hours = after / 3600
                self._append_event(session, order, "verified", SYSTEM_ACTOR, {
                    "from": State.DONE.value, "to": State.VERIFIED.value,
                    "verified_by": f"telemetry: normal for {hours:g} h after the work was done"})
                order.state = State.VERIFIED.value
                order.closure = {**(order.closure or {}), "verified_by": "telemetry"}
                verified.append(order.code)
        self.auto_verified += len(verified)
        return verified

    # -- asset operating states ------------------------------------------------------------

    def set_asset_state(self, asset_id: str, state: str, reason: str, actor: str, until: float | None) -> dict[str, Any]:
        """Maintenance, standby or commissioning suppress tickets; "operating" ends that."""
        with self.sessions.begin() as session:
            row = session.get(AssetState, asset_id)
            if state == "operating":
                if row is not None:
                    session.delete(row)
            elif row is None:
                session.add(AssetState(asset_id=asset_id, state=state, reason=reason, actor=actor, until=until,
                                       updated_at=self.clock()))
            else:
                row.state, row.reason, row.actor, row.until, row.updated_at = state, reason, actor, until, self.clock()
        return self.asset_state(asset_id)

    def asset_state(self, asset_id: str) -> dict[str, Any]:
        with self.reads() as session:
            row = self._current_state(session, asset_id)
            if row is None:
                return {"state": "operating", "suppresses_tickets": False}
            return {"state": row.state, "reason": row.reason, "actor": row.actor, "until": row.until,
                    "since": row.updated_at, "suppresses_tickets": row.state in self.config.hygiene.suppress_states}

    def _sla_alerts(self, session: Session, order: WorkOrder, now: float) -> bool:
        due = clocks.due_alerts(order.sla, now, self.config.sla.warn_at)
        if not due:
            return False
        order.sla = clocks.record_alerts(order.sla, due)
        breached = False
        for clock, threshold in due:
            kind = "sla_breach" if threshold >= clocks.BREACH else "sla_warning"
            breached |= kind == "sla_breach"
            self._append_event(session, order, kind, SYSTEM_ACTOR, {
                "clock": clock, "threshold": threshold, "deadline": clocks.deadline(order.sla, clock, now),
                "policy": order.sla["policy"]})
        if breached:
            order.escalation_level += 1
            self._append_event(session, order, "escalation", SYSTEM_ACTOR, {"level": order.escalation_level})
            self._redispatch_check(session, order)
        return True

    def _routing_escalation(self, session: Session, order: WorkOrder, now: float) -> None:
        """A routing rule's "escalate after": nobody accepted the order in time, so the people it names are told
        (once per order)."""
        routed = (order.context or {}).get("routing") or {}
        if not _routing_escalation_due(routed, order.accepted_at, order.created_at, now):
            return
        after = routed["escalate_after_s"]
        order.context = {**order.context, "routing": {**routed, "escalated_at": now}}
        self._append_event(session, order, "routing_escalation", SYSTEM_ACTOR, {
            "rules": routed.get("matched", []), "notify": routed.get("escalate_to", []), "after_s": after,
            "reason": f"not accepted {after / 60:.0f} min after opening"})

    def _redispatch_check(self, session: Session, order: WorkOrder) -> None:
        """At a breach, look again for a closer free engineer while the work has not started."""
        if order.accepted_at is not None or order.state not in _UNSTARTED:
            return
        fleet = self._fleet(session, [order])
        decision = choose_engineer(self._job(order), self.engineers, fleet, self._now(), self.config.dispatch)
        current = next((c for c in decision.candidates if c["engineer_id"] == order.assigned_engineer_id), None)
        if decision.engineer_id is not None and decision.engineer_id != order.assigned_engineer_id and (
                current is None or decision.candidates[0]["score"] > current["score"]):
            self._assign(session, order, decision, why="SLA breach re-dispatch")

    def _record_cleared(self, alarm: Alarm, failure_mode: str) -> str | None:
        """The open order the alarm had raised learns that its condition cleared; its code. A clear that
        names its condition (OPC UA's ConditionId) goes only to the order that condition raised: never
        to an unrelated open order of the same code (whose own condition may still be active)."""
        with self._transaction() as session:
            order = session.scalar(
                select(WorkOrder).where(WorkOrder.open_dedup_key == f"{alarm.device_id}:{failure_mode}")
            )
            if order is None:
                return None
            if alarm.condition_id and alarm.condition_id not in self._conditions_of(session, order):
                self._ignore("clear_of_another_condition",
                             f"{alarm.device_id}: {alarm.code} cleared for condition {alarm.condition_id}, which did "
                             f"not raise the open {order.code}; not attached to it")
                return None
            self._append_event(session, order, "condition_cleared", alarm.source or SYSTEM_ACTOR,
                               {"alarm_code": alarm.code, "cleared_at": alarm.raised_at,
                                **({"condition_id": alarm.condition_id} if alarm.condition_id else {})})
            return order.code

    @staticmethod
    def _conditions_of(session: Session, order: WorkOrder) -> set[str]:
        """The condition ids of the alarms that raised the order or were counted on it."""
        found = {(order.context or {}).get("finding", {}).get("condition_id")}
        for data in session.scalars(select(Event.data).where(
                Event.work_order_id == order.id, Event.kind.in_(("occurrence", "related_finding", "reopened")))):
            found.add((data.get("finding") or {}).get("condition_id"))
        return {condition for condition in found if condition}

    def _append_event(self, session: Session, order: WorkOrder, kind: str, actor: str, data: dict[str, Any]) -> None:
        """Add an event; its MAC is computed when the transaction seals (``_seal``), over the order's
        fields as they are then."""
        chains = session.info["chains"]
        if order.id not in chains:
            stored = session.execute(
                select(Event.hash, func.count().over()).where(Event.work_order_id == order.id)
                .order_by(Event.id.desc()).limit(1)).first()
            previous, length = (stored[0], stored[1]) if stored else (chain.GENESIS_HASH, 0)
            chains[order.id] = (order, previous, length, [])
        at = self.clock()
        # Inserted once sealed (``_seal``): whole, not inserted and then updated with its MAC.
        event = Event(work_order_id=order.id, at=at, kind=kind, actor=actor, data=data, hash="")
        chains[order.id][3].append(event)
        session.info["events"].append(WorkOrderEvent(order.code, kind, at, actor, data, order.device_id))

    def _seal(self, session: Session) -> list[tuple[str, str, int, str]]:
        """MAC every event of the transaction; an order whose sealed fields changed without an event
        gets an ``amended`` one, so nothing about an order changes unrecorded. Returns the heads to anchor."""
        loaded = {o.id: o for o in session.identity_map.values()
                  if isinstance(o, WorkOrder) and o.id not in session.info["chains"]}
        if loaded:
            last_ids = select(func.max(Event.id)).where(Event.work_order_id.in_(loaded)).group_by(Event.work_order_id)
            sealed = dict(session.execute(select(Event.work_order_id, Event.row_digest)
                                          .where(Event.id.in_(last_ids))).all())
            for order_id, order in loaded.items():
                if sealed.get(order_id) is not None and sealed[order_id] != chain.row_digest(order):
                    # A code path changed a sealed field without an event: record it rather than let the
                    # next verification call it tampering.
                    log.warning("work order %s changed without an event; recorded as 'amended'", order.code)
                    self._append_event(session, order, "amended", SYSTEM_ACTOR, {})
        heads, sealed_rows = [], []
        for order, previous, length, events in session.info["chains"].values():
            digest = chain.row_digest(order)
            for event in events:
                chain.seal(self.signer, previous, order.code, event, digest)
                previous = event.hash
            sealed_rows += [{column: getattr(event, column) for column in _EVENT_COLUMNS} for event in events]
            heads.append((order.code, previous, length + len(events), events[-1].actor))
        if sealed_rows:
            # One statement for all (the ORM inserted them one by one to learn ids nobody reads).
            session.execute(insert(Event), sealed_rows)
        return heads

    @contextmanager
    def _transaction(self) -> Iterator[Session]:
        """A transaction whose events are sealed before it commits, anchored and published after."""
        with self.sessions.begin() as session:
            session.info["events"] = []
            session.info["chains"] = {}
            session.info["envelopes"] = []  # other events of the transaction (alarms, anomalies)
            yield session
            heads = self._seal(session)
            # In the same commit as the events: the outbox has an event exactly when the chain does.
            queued = outbox.enqueue(session, [
                envelope for order, _, _, events in session.info["chains"].values() for event in events
                for envelope in self._envelopes(order, event)] + session.info["envelopes"], self.clock())
            connection = session.connection()
            # The audit log elsewhere: the heads are noted here first, so a crash before they are anchored
            # leaves them to be anchored at the next start (anchor_pending).
            noted = [] if not heads or self.anchors.shares(connection) else self._note_pending(session, heads)
            anchored = self.anchors.anchor_many(heads, connection)  # last: it may lock the audit log
        if queued:
            self.webhooks.wake()
        anchored()
        if noted:
            with self.sessions.begin() as forgetting:
                forgetting.execute(delete(PendingAnchor).where(PendingAnchor.id.in_(noted)))
        for event in session.info.pop("events"):
            self.publish(event)

    @staticmethod
    def _note_pending(session: Session, heads: list[tuple[str, str, int, str]]) -> list[int]:
        rows = [PendingAnchor(code=code, head=head, length=length, actor=actor) for code, head, length, actor in heads]
        session.add_all(rows)
        session.flush()
        return [row.id for row in rows]

    def _anchor_pending_or_later(self, at_start: bool = False) -> None:
        try:
            self.anchor_pending(at_start)
        except Exception:  # the audit log away: the heads stay noted for the next tick
            log.exception("anchoring chain heads noted earlier failed; tried again at the next clock tick")

    def anchor_pending(self, at_start: bool = True) -> int:
        """Anchor the chain heads that were committed but never anchored (the audit log in another database,
        and the gateway died between the two commits, or the log did not answer), then forget them; how
        many were anchored. A head is anchored only if it is longer than the chain's last anchor: another
        gateway may have moved the chain on and anchored it meanwhile. Running (not ``at_start``), only
        heads already noted at the last call are taken: younger ones are being anchored by the transaction
        that noted them, and anchoring one after a later head of its chain would shorten its anchor."""
        with self.reads() as session:
            rows = [tuple(row) for row in session.execute(select(
                PendingAnchor.id, PendingAnchor.code, PendingAnchor.head, PendingAnchor.length, PendingAnchor.actor))]
        if not at_start:
            seen, self._pending_seen = self._pending_seen, set(rows)
            rows = [row for row in rows if row in seen]
        if not rows:
            return 0
        longest: dict[str, tuple[str, str, int, str]] = {}
        for _, code, head, length, actor in rows:
            if code not in longest or length > longest[code][2]:
                longest[code] = (code, head, length, actor)
        heads = [head for code, head in longest.items()
                 if (anchor := self.anchors.latest_anchor(code)) is None or anchor["length"] < head[2]]
        if heads:
            # Committed before the noted heads are forgotten, wherever the log is now: in this transaction if
            # it shares the database (it may have moved there since they were noted), else by ``finish``.
            with self.engine.begin() as connection:
                finish = self.anchors.anchor_many(heads, connection)
            finish()
        with self.sessions.begin() as session:
            session.execute(delete(PendingAnchor).where(PendingAnchor.id.in_([row[0] for row in rows])))
        if heads:
            log.warning("anchored %d work-order chain head(s) committed before a stop or an audit-log outage",
                        len(heads))
        return len(heads)

    def _envelopes(self, order: WorkOrder, event: Event) -> list[Envelope]:
        """The event for other systems, then the notices it makes for people (same order: they follow it)."""
        made = [work_order_envelope(self.event_source, event.hash, order.code, order.device_id, order.site_id,
                                    event.kind, event.at, event.actor, event.data, order.external_ref)]
        lists = notices.notices(self.config.notices, event.kind, order.priority, order.site_id,
                                order.assigned_engineer_id, self._engineers_by_id)
        if event.kind in ("routed", "routing_escalation"):
            # Told by a routing rule: the people it names, whatever the notice rules say.
            rule = NoticeRule(events=[event.kind], to=event.data["notify"])
            people = notices.recipients(rule, order.site_id, order.assigned_engineer_id,
                                        self.config.notices.contacts, self._engineers_by_id)
            lists = [people, *lists] if people else lists
        for index, people in enumerate(lists):
            subject, text = notices.wording(event.kind, order.code, order.device_id, order.priority, event.data)
            made.append(notice_envelope(self.event_source, event.hash, index, order.code, order.device_id,
                                        order.site_id, event.kind, order.priority, event.at, subject, text, people))
        return made

    # -- lifecycle ---------------------------------------------------------------------

    def transition(self, code: str, target: State, actor: str, fields: dict[str, Any]) -> dict[str, Any] | None:
        """Move a work order to ``target``; None if there is no such order.

        Raises :class:`TransitionRefused` with the reason when the move is illegal,
        lacks a field its guard needs, or would break the one-open-order rule.
        """
        fields = {name: value for name, value in fields.items() if value not in (None, "", [])}
        try:
            with self._transaction() as session:
                order = session.scalar(select(WorkOrder).where(WorkOrder.code == code).with_for_update())
                if order is None:
                    return None
                current = State(order.state)
                refusal = check_transition(current, target, fields) or self._refusal(session, order, target, fields)
                if refusal:
                    raise TransitionRefused(refusal)
                self._apply(session, order, target, fields)
                order.state = target.value
                order.updated_at = self.clock()
                session.flush()
                self._append_event(session, order, target.value.lower(), actor,
                                   {"from": current.value, "to": target.value, **fields})
        except IntegrityError:
            raise TransitionRefused(
                f"another open work order already holds {code}'s dedup key; merge one into the other"
            ) from None
        return self.get_work_order(code)

    def _refusal(self, session: Session, order: WorkOrder, target: State, fields: dict[str, Any]) -> str | None:
        if target is State.DISPATCHED:
            engineer = next((e for e in self.engineers if e.id == fields["engineer_id"]), None)
            if engineer is None:
                return f"no engineer {fields['engineer_id']!r}"
            # A dispatcher may overrule the ranking and knowingly send someone late, never the hard filters.
            job = self._job(order)
            ruled_out = grade(replace(job, excluded=frozenset()), engineer, self._fleet(session, [order]),
                              self._now(), self.config.dispatch, enforce_deadline=False)
            if isinstance(ruled_out, str):
                return f"{engineer.id}: {ruled_out}"
        if target is State.DONE:
            miscoded = check_closure(self.config.coding, fields, (order.context or {}).get("asset", {}).get("type"))
            if miscoded:
                return miscoded
        if target is State.MERGED:
            into = fields["merged_into"]
            if into == order.code or session.scalar(select(WorkOrder.id).where(WorkOrder.code == into)) is None:
                return f"cannot merge into {into!r}: no such other work order"
        return None

    def _apply(self, session: Session, order: WorkOrder, target: State, fields: dict[str, Any]) -> None:
        now = self.clock()
        if target is State.DISPATCHED:
            order.assigned_engineer_id = fields["engineer_id"]
            order.eta = float(fields["eta"])
            order.offered_at, order.accepted_at = now, None
        if target is State.EN_ROUTE:
            self._accepted(session, order, order.assigned_engineer_id or SYSTEM_ACTOR)
        self._update_clocks(order, target, fields, now)
        if target is State.DONE:
            # Failure coding suggested at creation is confirmed (or corrected) at close.
            order.failure_mode = fields["failure_mode"]
            order.failure_mechanism = fields["failure_mechanism"]
            order.failure_cause = fields["failure_cause"]
            order.maintainable_item = fields.get("maintainable_item") or order.maintainable_item
        closing = {k: v for k, v in fields.items() if k not in ("engineer_id", "eta", "reason", "note")}
        if closing:
            order.closure = {**(order.closure or {}), **closing}
        if target in OPEN_STATES:
            order.open_dedup_key = order.dedup_key
            order.closed_at = None
        else:
            order.open_dedup_key = None
            order.closed_at = order.closed_at or now

    def _update_clocks(self, order: WorkOrder, target: State, fields: dict[str, Any], now: float) -> None:
        if order.sla is None:
            return
        sla = order.sla
        if order.state == State.ON_HOLD.value:
            sla = clocks.resume(sla, now)
        if target is State.ON_HOLD and fields.get("reason") in self.config.sla.pause_reasons:
            sla = clocks.pause(sla, now)
        if target is State.ON_SITE:
            sla = clocks.met(sla, "on_site", now)
        if target is State.DONE:
            sla = clocks.met(sla, "restore", float(fields.get("restored_at") or now))
        order.sla = sla

    # -- sign-off and the service report ---------------------------------------------------

    def sign_off(self, code: str, statement: str, identity: str, name: str, role: str,
                 drawing_png: bytes | None = None) -> dict[str, Any] | None:
        """``identity`` signs ``statement`` (see :data:`ticketing.signoff.STATEMENTS`) over the order as it
        is now; None if there is no such order. Raises :class:`TransitionRefused` when it is not time to."""
        with self._transaction() as session:
            order = self._locked(session, code)
            if order is None:
                return None
            events = session.scalars(select(Event).where(Event.work_order_id == order.id).order_by(Event.id)).all()
            entered = max((i for i, e in enumerate(events) if e.data.get("to") == order.state), default=-1)
            already = {e.data["content"]["statement"] for e in events[entered + 1:] if e.kind == signoff.SIGNED}
            refused = signoff.refusal(order.state, statement, already)
            if refused:
                raise TransitionRefused(refused)
            drawing = None
            if drawing_png:
                drawing = hashlib.sha256(drawing_png).hexdigest()
                if session.get(SignatureDrawing, drawing) is None:
                    session.add(SignatureDrawing(sha256=drawing, work_order_id=order.id, png=drawing_png))
            content = {
                "statement": statement, "vouches": signoff.STATEMENTS[statement][1], "code": order.code,
                "order": signoff.order_content(order), "head": events[-1].hash if events else None,
                "length": len(events), "signed_at": self.clock(), "drawing_sha256": drawing,
                "signer": {"identity": identity, "name": name, "role": role},
            }
            self._append_event(session, order, signoff.SIGNED, identity, signoff.sign(self.signer, content))
        return self.get_work_order(code)

    def latest_signature(self, code: str) -> str | None:
        """The hash of the order's latest signature event: the head its service report is issued for."""
        with self.reads() as session:
            return session.scalar(select(Event.hash).join(WorkOrder).where(
                WorkOrder.code == code, Event.kind == signoff.SIGNED).order_by(Event.id.desc()).limit(1))

    def stored_report(self, code: str, head: str) -> bytes | None:
        with self.reads() as session:
            return session.scalar(select(ServiceReport.pdf).join(WorkOrder, ServiceReport.work_order_id == WorkOrder.id)
                                  .where(WorkOrder.code == code, ServiceReport.head == head)
                                  .order_by(ServiceReport.id.desc()).limit(1))

    def store_report(self, code: str, head: str, pdf: bytes) -> bytes:
        """Keep the report issued for signature ``head`` and seal its digest into the chain; if one was
        issued meanwhile (two downloads at once), that one is the report and is returned."""
        with self._transaction() as session:
            order = self._locked(session, code)
            if order is None:
                raise KeyError(code)
            issued = session.scalar(select(ServiceReport.pdf).where(
                ServiceReport.work_order_id == order.id, ServiceReport.head == head).limit(1))
            if issued is not None:
                return issued
            digest = hashlib.sha256(pdf).hexdigest()
            session.add(ServiceReport(work_order_id=order.id, head=head, issued_at=self.clock(), sha256=digest,
                                      pdf=pdf))
            self._append_event(session, order, signoff.REPORT_ISSUED, SYSTEM_ACTOR,
                               {"head": head, "sha256": digest, "bytes": len(pdf)})
        return pdf

    def signature_verdict(self, code: str, head: str | None) -> dict[str, Any]:
        """Whether what was signed still holds (:func:`ticketing.signoff.verdict`): for anyone, no sign-in."""
        # Read before the session opens: on SQLite the audit log may share the database file, and a
        # second write-locking transaction on it would wait for this one.
        anchor = self.anchors.latest_anchor(code)
        with self.reads() as session:
            order = session.scalar(select(WorkOrder).where(WorkOrder.code == code))
            if order is None:
                return signoff.verdict(code, None, [], head, self.signer, None, {})
            events = session.scalars(select(Event).where(Event.work_order_id == order.id).order_by(Event.id)).all()
            digests: dict[str, list[str]] = {}
            for report_head, pdf in session.execute(select(ServiceReport.head, ServiceReport.pdf)
                                                    .where(ServiceReport.work_order_id == order.id)):
                digests.setdefault(report_head, []).append(hashlib.sha256(pdf).hexdigest())
            checked = chain.verify_chain(session, self.signer, code, anchor)
            return signoff.verdict(code, order, list(events), head, self.signer, checked, digests)

    def issued_report_head(self, code: str, pdf: bytes) -> str | None:
        """The signature head a PDF was issued for, if it is a report this gateway issued for ``code``."""
        digest = hashlib.sha256(pdf).hexdigest()
        with self.reads() as session:
            for event in session.scalars(select(Event).join(WorkOrder).where(
                    WorkOrder.code == code, Event.kind == signoff.REPORT_ISSUED)):
                if event.data.get("sha256") == digest:
                    return str(event.data["head"])
        return None

    def drawing(self, code: str, digest: str) -> bytes | None:
        with self.reads() as session:
            return session.scalar(select(SignatureDrawing.png).join(WorkOrder).where(
                WorkOrder.code == code, SignatureDrawing.sha256 == digest))

    def verify_chain(self, code: str) -> dict[str, Any] | None:
        """Recompute the event hash chain; any row changed, removed or inserted behind our back breaks it."""
        with self.reads() as session:
            return chain.verify_chain(session, self.signer, code, self.anchors.latest_anchor(code))

    # -- queries (ticketing.queries reads; the service only opens the session) ------------

    def list_work_orders(self, **filters: Any) -> list[dict[str, Any]]:
        """Newest first; ``filters`` as :func:`ticketing.queries.list_work_orders` takes them."""
        return self.work_order_page(**filters)[1]

    def work_order_page(self, **filters: Any) -> tuple[int, list[dict[str, Any]]]:
        """(total matching, the page): what a paginated list shows."""
        with self.reads() as session:
            return queries.list_work_orders(session, now=self.clock(), **filters)

    def get_work_order(self, code: str) -> dict[str, Any] | None:
        with self.reads() as session:
            return queries.work_order(session, code, self.clock())

    def list_anomalies(self, **filters: Any) -> list[dict[str, Any]]:
        """Newest first; ``filters`` as :func:`ticketing.queries.list_anomalies` takes them."""
        return self.anomaly_page(**filters)[1]

    def anomaly_page(self, **filters: Any) -> tuple[int, list[dict[str, Any]]]:
        with self.reads() as session:
            return queries.list_anomalies(session, **filters)

    def findings_between(self, since: float, until: float, limit: int) -> tuple[list[Anomaly], list[Alarm]]:
        """The findings ticketing received in a window, oldest first, as they came (a dry run replays them)."""
        with self.reads() as session:
            anomalies = [Anomaly(r.device_id, r.detected_at, r.detector, r.score, Severity(r.severity), r.failure_mode,
                                 list(r.metrics), r.message)
                         for r in session.scalars(select(AnomalyRecord).where(
                             AnomalyRecord.detected_at >= since, AnomalyRecord.detected_at <= until)
                             .order_by(AnomalyRecord.detected_at).limit(limit))]
            alarms = [Alarm(r.device_id, r.at, r.code, Severity(r.severity), r.message, r.active, r.source)
                      for r in session.scalars(select(AlarmRecord).where(AlarmRecord.at >= since, AlarmRecord.at <= until)
                                               .order_by(AlarmRecord.at).limit(limit))]
        return anomalies, alarms

    def alarm_page(self, **filters: Any) -> tuple[int, list[dict[str, Any]]]:
        """The alarm journal, newest first; ``filters`` as :func:`ticketing.queries.list_alarms` takes them."""
        with self.reads() as session:
            return queries.list_alarms(session, **filters)

    def open_loads(self) -> dict[str, int]:
        with self.reads() as session:
            return queries.open_loads(session)

    def open_by_device(self) -> dict[str, tuple[str, int]]:
        with self.reads() as session:
            return queries.open_by_device(session)

    def asset_states(self) -> dict[str, str]:
        """Every asset not operating (and not run out of its state): its state."""
        with self.reads() as session:
            return {row.asset_id: row.state for row in session.scalars(select(AssetState))
                    if row.until is None or row.until > self.clock()}

    def problems(self, now: float) -> list[str]:
        """What stopped working here and shows in ``/health``: a routing server that does not answer (asked
        by a dispatch here, or by a re-plan in the planner process)."""
        return routing_problems(now) + self.planner.routing_problems(now)

    def diagnostics(self) -> dict[str, Any]:
        return {"work_orders_created": self.created, "occurrences_added": self.occurrences, "ignored": self.ignored,
                "reopened": self.reopened, "flood_findings": self.flood_findings, "auto_verified": self.auto_verified,
                "operating_context_errors": self.context_errors, **self.planner.diagnostics()}

    def close(self) -> None:
        self.planner.close()
        self.reader.dispose()
        self.engine.dispose()
