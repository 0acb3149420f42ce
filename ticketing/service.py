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
from datetime import datetime, timezone
from contextlib import contextmanager
from typing import Any, Callable, Iterator

import orjson
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload, sessionmaker

from gateway.core import (
    DEVICE_OFFLINE_CODE, Alarm, Anomaly, Asset, Criticality, Reading, Severity, WorkOrderEvent,
)
from ticketing.config import EngineerConfig, TicketingConfig
from ticketing.dispatch import choose_engineer, on_shift
from ticketing.lifecycle import OPEN_STATES, State, check_transition
from ticketing.database import make_engine, migrate
from ticketing.models import AnomalyRecord, CodeCounter, Event, Origin, WorkOrder

log = logging.getLogger(__name__)

SYSTEM_ACTOR = "pm-gateway"
_OPEN = sorted(state.value for state in OPEN_STATES)
# Travel estimate for an ETA: straight-line distance x road factor / average speed.
ROAD_FACTOR = 1.3
AVERAGE_SPEED_KMH = 50.0


class TransitionRefused(Exception):
    """An illegal or incomplete transition; the message says why."""
GENESIS_HASH = "0" * 64

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


def event_hash(previous: str, code: str, kind: str, at: float, actor: str, data: dict[str, Any]) -> str:
    content = orjson.dumps(
        {"previous": previous, "code": code, "kind": kind, "at": at, "actor": actor, "data": data},
        option=orjson.OPT_SORT_KEYS,
    )
    return hashlib.sha256(content).hexdigest()


def _reading_dict(reading: Reading) -> dict[str, Any]:
    return {"metric": reading.metric, "value": reading.value, "timestamp": reading.timestamp,
            "quality": reading.quality.value}


def _open_loads(session: Session) -> dict[str, int]:
    """Open work orders per assigned engineer."""
    rows = session.execute(
        select(WorkOrder.assigned_engineer_id, func.count())
        .where(WorkOrder.state.in_(_OPEN), WorkOrder.assigned_engineer_id.is_not(None))
        .group_by(WorkOrder.assigned_engineer_id)
    )
    return {engineer_id: count for engineer_id, count in rows if engineer_id is not None}


class TicketingService:
    def __init__(
        self,
        config: TicketingConfig,
        assets: dict[str, Asset],
        engineers: list[EngineerConfig],
        publish: Callable[[WorkOrderEvent], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.assets = assets
        self.engineers = engineers
        self.publish = publish or (lambda event: None)
        self.clock = clock
        self.engine = make_engine(config.database_url)
        self.schema_revision = migrate(self.engine)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)
        self.created = 0
        self.occurrences = 0
        self.ignored: dict[str, int] = {}

    # -- intake ------------------------------------------------------------------------

    def handle_anomaly(self, anomaly: Anomaly) -> str | None:
        asset = self._asset(anomaly.device_id)
        if asset is None:
            return None
        detector = {"detector": anomaly.detector, "score": anomaly.score, "message": anomaly.message,
                    "metrics": anomaly.metrics, "severity": anomaly.severity.value}
        code = self._raise(
            asset=asset, failure_mode=anomaly.failure_mode, mechanism=anomaly.failure_mechanism,
            item=anomaly.maintainable_item, origin=Origin.ANOMALY, severity=anomaly.severity,
            title=f"{anomaly.failure_mode} on {asset.id}: {anomaly.message}",
            evidence=anomaly.evidence, finding=detector, at=anomaly.detected_at,
        )
        with self.sessions.begin() as session:
            session.add(AnomalyRecord(
                device_id=anomaly.device_id, detected_at=anomaly.detected_at, detector=anomaly.detector,
                score=anomaly.score, severity=anomaly.severity.value, failure_mode=anomaly.failure_mode,
                metrics=anomaly.metrics, message=anomaly.message, work_order_code=code,
            ))
        return code

    def handle_alarm(self, alarm: Alarm) -> str | None:
        asset = self._asset(alarm.device_id)
        if asset is None:
            return None
        failure_mode, mechanism = alarm.code, ""
        if alarm.code == DEVICE_OFFLINE_CODE:
            offline = self.config.device_offline
            failure_mode, mechanism = offline.failure_mode, offline.failure_mechanism
            if not offline.open_work_order:
                self.ignored["device_offline" if alarm.active else "device_online"] = (
                    self.ignored.get("device_offline" if alarm.active else "device_online", 0) + 1)
                log.warning("%s: %s (no work order: ticketing.device_offline.open_work_order is off)",
                            alarm.device_id, alarm.message)
                return None
        if not alarm.active:
            self._record_cleared(alarm, failure_mode)
            return None
        finding = {"alarm_code": alarm.code, "message": alarm.message, "severity": alarm.severity.value,
                   "source": alarm.source}
        return self._raise(
            asset=asset, failure_mode=failure_mode, mechanism=mechanism, item="", origin=Origin.DEVICE_ALARM,
            severity=alarm.severity, title=f"{alarm.code} alarm on {asset.id}: {alarm.message}",
            evidence=[], finding=finding, at=alarm.raised_at,
        )

    def _asset(self, device_id: str) -> Asset | None:
        asset = self.assets.get(device_id)
        if asset is None:
            self.ignored["unknown_device"] = self.ignored.get("unknown_device", 0) + 1
            log.warning("ticketing: no asset %r; finding not ticketed", device_id)
        return asset

    # -- work orders -------------------------------------------------------------------

    def _raise(
        self, *, asset: Asset, failure_mode: str, mechanism: str, item: str, origin: Origin,
        severity: Severity, title: str, evidence: list[Reading], finding: dict[str, Any], at: float,
    ) -> str:
        dedup_key = f"{asset.id}:{failure_mode}"
        priority = priority_for(severity, asset.criticality)
        for attempt in range(3):
            try:
                with self._transaction() as session:
                    existing = self._open_for(session, asset.id, dedup_key, at)
                    if existing is not None:
                        return self._add_occurrence(session, existing, failure_mode, priority, finding, at)
                    return self._create(
                        session, asset, dedup_key, failure_mode, mechanism, item, origin, priority,
                        title, evidence, finding, at,
                    )
            except IntegrityError:
                # Another writer opened the same key (or took the same code) first: retry as a repeat.
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _open_for(self, session: Session, device_id: str, dedup_key: str, at: float) -> WorkOrder | None:
        same_key = session.scalar(select(WorkOrder).where(WorkOrder.open_dedup_key == dedup_key).with_for_update())
        if same_key is not None:
            return same_key
        # Compared on the findings' own clock (device time), not the wall clock: an
        # incident stays one while its findings keep coming within the window.
        return session.scalar(
            select(WorkOrder)
            .where(WorkOrder.device_id == device_id, WorkOrder.state.in_(_OPEN),
                   WorkOrder.last_occurrence_at >= at - self.config.group_window_s)
            .order_by(WorkOrder.created_at)
            .limit(1)
            .with_for_update()
        )

    def _add_occurrence(
        self, session: Session, order: WorkOrder, failure_mode: str, priority: str,
        finding: dict[str, Any], at: float,
    ) -> str:
        order.occurrences += 1
        order.last_occurrence_at = max(order.last_occurrence_at, at)
        order.updated_at = self.clock()
        data: dict[str, Any] = {"occurrence": order.occurrences, "failure_mode": failure_mode, "finding": finding}
        if priority < order.priority:  # "P1" < "P2": a more urgent repeat raises the order
            data["priority_raised"] = {"from": order.priority, "to": priority}
            order.priority = priority
        kind = "occurrence" if failure_mode == order.failure_mode else "related_finding"
        self._append_event(session, order, kind, SYSTEM_ACTOR, data)
        self.occurrences += 1
        return order.code

    def _next_code(self, session: Session, at: float) -> str:
        day = datetime.fromtimestamp(at, timezone.utc).strftime("%Y%m%d")
        counter = session.get(CodeCounter, day, with_for_update=True)
        if counter is None:
            counter = CodeCounter(day=day, last=0)
            session.add(counter)
        counter.last += 1
        session.flush()
        return f"{self.config.code_prefix}-{day}-{counter.last:04d}"

    def _create(
        self, session: Session, asset: Asset, dedup_key: str, failure_mode: str, mechanism: str, item: str,
        origin: Origin, priority: str, title: str, evidence: list[Reading], finding: dict[str, Any], at: float,
    ) -> str:
        now = self.clock()
        skill = self.config.required_skills.get(failure_mode, self.config.default_skill)
        context = {
            "asset": asset.as_dict(),
            "finding": finding,
            "triggering_readings": [_reading_dict(r) for r in evidence[-self.config.evidence_readings:]],
        }
        order = WorkOrder(
            code=self._next_code(session, now), open_dedup_key=dedup_key, dedup_key=dedup_key,
            device_id=asset.id, site_id=asset.site.id, origin=origin.value, failure_mode=failure_mode,
            failure_mechanism=mechanism, maintainable_item=item, priority=priority,
            state=State.RECEIVED.value, title=title[:300], required_skill=skill, occurrences=1,
            context=context, created_at=now, updated_at=now, last_occurrence_at=at,
        )
        session.add(order)
        session.flush()
        self._append_event(session, order, "created", SYSTEM_ACTOR, {
            "origin": origin.value, "failure_mode": failure_mode, "priority": priority, "detected_at": at,
        })
        self._dispatch(session, order, asset)
        self.created += 1
        log.info("work order %s opened for %s (%s, %s)", order.code, asset.id, failure_mode, priority)
        return order.code

    def _dispatch(self, session: Session, order: WorkOrder, asset: Asset) -> None:
        loads = _open_loads(session)
        decision = choose_engineer(
            self.engineers, order.required_skill, (asset.site.latitude, asset.site.longitude),
            datetime.fromtimestamp(self.clock(), timezone.utc), loads,
        )
        order.assignment = decision.as_dict()
        if decision.engineer_id is None:
            self._append_event(session, order, "escalated", SYSTEM_ACTOR,
                               {"queue": "dispatcher", "reason": decision.reason})
            return
        order.assigned_engineer_id = decision.engineer_id
        order.eta = self.clock() + decision.candidates[0]["distance_km"] * ROAD_FACTOR / AVERAGE_SPEED_KMH * 3600
        order.state = State.DISPATCHED.value
        self._append_event(session, order, "dispatched", SYSTEM_ACTOR, {
            "from": State.RECEIVED.value, "to": State.DISPATCHED.value,
            "engineer_id": decision.engineer_id, "eta": order.eta, "reason": decision.reason,
        })

    def _record_cleared(self, alarm: Alarm, failure_mode: str) -> None:
        with self._transaction() as session:
            order = session.scalar(
                select(WorkOrder).where(WorkOrder.open_dedup_key == f"{alarm.device_id}:{failure_mode}")
            )
            if order is not None:
                self._append_event(session, order, "condition_cleared", alarm.source or SYSTEM_ACTOR,
                                   {"alarm_code": alarm.code, "cleared_at": alarm.raised_at})

    def _append_event(self, session: Session, order: WorkOrder, kind: str, actor: str, data: dict[str, Any]) -> None:
        previous = session.scalar(
            select(Event.hash).where(Event.work_order_id == order.id).order_by(Event.id.desc()).limit(1)
        ) or GENESIS_HASH
        at = self.clock()
        digest = event_hash(previous, order.code, kind, at, actor, data)
        session.add(Event(work_order_id=order.id, at=at, kind=kind, actor=actor, data=data, hash=digest))
        session.info["events"].append(WorkOrderEvent(order.code, kind, at, actor, data, order.device_id))

    @contextmanager
    def _transaction(self) -> Iterator[Session]:
        """A transaction whose work-order events are published only once it committed."""
        with self.sessions.begin() as session:
            session.info["events"] = []
            yield session
        for event in session.info.pop("events"):
            self.publish(event)

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
                self._apply(order, target, fields)
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
            if order.required_skill not in engineer.skills:
                return f"{engineer.id} lacks skill {order.required_skill}"
            if not on_shift(engineer.shift, datetime.fromtimestamp(self.clock(), timezone.utc)):
                return f"{engineer.id} is off shift"
        if target is State.MERGED:
            into = fields["merged_into"]
            if into == order.code or session.scalar(select(WorkOrder.id).where(WorkOrder.code == into)) is None:
                return f"cannot merge into {into!r}: no such other work order"
        return None

    def _apply(self, order: WorkOrder, target: State, fields: dict[str, Any]) -> None:
        if target is State.DISPATCHED:
            order.assigned_engineer_id = fields["engineer_id"]
            order.eta = float(fields["eta"])
        if target is State.DONE:
            # Failure coding suggested at creation is confirmed (or corrected) at close.
            order.failure_mode = fields["failure_mode"]
            order.failure_mechanism = fields["failure_mechanism"]
            order.failure_cause = fields["failure_cause"]
        closing = {k: v for k, v in fields.items() if k not in ("engineer_id", "eta", "reason", "note")}
        if closing:
            order.closure = {**(order.closure or {}), **closing}
        if target in OPEN_STATES:
            order.open_dedup_key = order.dedup_key
        else:
            order.open_dedup_key = None

    def verify_chain(self, code: str) -> dict[str, Any] | None:
        """Recompute the event hash chain; any row changed, removed or inserted behind our back breaks it."""
        with self.sessions() as session:
            order = session.scalar(select(WorkOrder).where(WorkOrder.code == code))
            if order is None:
                return None
            events = session.scalars(select(Event).where(Event.work_order_id == order.id).order_by(Event.id)).all()
            previous = GENESIS_HASH
            for index, event in enumerate(events):
                expected = event_hash(previous, order.code, event.kind, event.at, event.actor, event.data)
                if expected != event.hash:
                    return {"code": code, "valid": False, "events": len(events), "broken_at": index,
                            "reason": f"event {index} ({event.kind}) does not match its hash: "
                                      "it, or an event before it, was changed or removed"}
                previous = event.hash
            return {"code": code, "valid": True, "events": len(events), "broken_at": None, "reason": None}

    # -- queries -----------------------------------------------------------------------

    def list_work_orders(
        self, *, device_id: str | None = None, site_id: str | None = None, state: str | None = None,
        priority: str | None = None, engineer_id: str | None = None, limit: int = 100, offset: int = 0,
    ) -> list[dict[str, Any]]:
        query = select(WorkOrder).order_by(WorkOrder.created_at.desc()).limit(limit).offset(offset)
        filters = {
            WorkOrder.device_id: device_id, WorkOrder.site_id: site_id, WorkOrder.state: state,
            WorkOrder.priority: priority, WorkOrder.assigned_engineer_id: engineer_id,
        }
        for column, value in filters.items():
            if value is not None:
                query = query.where(column == value)
        with self.sessions() as session:
            return [self._summary(order) for order in session.scalars(query)]

    def get_work_order(self, code: str) -> dict[str, Any] | None:
        with self.sessions() as session:
            order = session.scalar(
                select(WorkOrder).where(WorkOrder.code == code).options(selectinload(WorkOrder.events))
            )
            if order is None:
                return None
            return self._summary(order) | {
                "context": order.context,
                "assignment": order.assignment,
                "eta": order.eta,
                "closure": order.closure or {},
                "events": [
                    {"at": e.at, "kind": e.kind, "actor": e.actor, "data": e.data, "hash": e.hash}
                    for e in order.events
                ],
            }

    def list_anomalies(self, *, device_id: str | None = None, since: float = 0.0, limit: int = 100) -> list[dict[str, Any]]:
        query = (select(AnomalyRecord).where(AnomalyRecord.detected_at >= since)
                 .order_by(AnomalyRecord.detected_at.desc()).limit(limit))
        if device_id is not None:
            query = query.where(AnomalyRecord.device_id == device_id)
        with self.sessions() as session:
            return [
                {"device_id": a.device_id, "detected_at": a.detected_at, "detector": a.detector, "score": a.score,
                 "severity": a.severity, "failure_mode": a.failure_mode, "metrics": a.metrics,
                 "message": a.message, "work_order_code": a.work_order_code}
                for a in session.scalars(query)
            ]

    def open_loads(self) -> dict[str, int]:
        with self.sessions() as session:
            return _open_loads(session)

    @staticmethod
    def _summary(order: WorkOrder) -> dict[str, Any]:
        return {
            "code": order.code, "device_id": order.device_id, "site_id": order.site_id, "origin": order.origin,
            "failure_mode": order.failure_mode, "failure_mechanism": order.failure_mechanism,
            "failure_cause": order.failure_cause,
            "maintainable_item": order.maintainable_item, "priority": order.priority, "state": order.state,
            "title": order.title, "required_skill": order.required_skill, "occurrences": order.occurrences,
            "assigned_engineer_id": order.assigned_engineer_id, "created_at": order.created_at,
            "updated_at": order.updated_at, "last_occurrence_at": order.last_occurrence_at,
        }

    def diagnostics(self) -> dict[str, Any]:
        return {"work_orders_created": self.created, "occurrences_added": self.occurrences, "ignored": self.ignored}

    def close(self) -> None:
        self.engine.dispose()
