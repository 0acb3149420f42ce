"""The read side of ticketing: work orders, findings and loads as the API shows them.

Plain functions over a session the caller opens; none of them writes.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, selectinload

from ticketing import sla as clocks
from ticketing.lifecycle import OPEN_STATES
from ticketing.models import AlarmRecord, AnomalyRecord, WorkOrder

OPEN = sorted(state.value for state in OPEN_STATES)


def open_loads(session: Session) -> dict[str, int]:
    """Open work orders per assigned engineer."""
    rows = session.execute(
        select(WorkOrder.assigned_engineer_id, func.count())
        .where(WorkOrder.state.in_(OPEN), WorkOrder.assigned_engineer_id.is_not(None))
        .group_by(WorkOrder.assigned_engineer_id)
    )
    return {engineer_id: count for engineer_id, count in rows if engineer_id is not None}


def open_by_device(session: Session) -> dict[str, tuple[str, int]]:
    """Per device with open work orders: (the most urgent priority, how many)."""
    rows = session.execute(
        select(WorkOrder.device_id, func.min(WorkOrder.priority), func.count())
        .where(WorkOrder.state.in_(OPEN)).group_by(WorkOrder.device_id))
    return {device: (priority, count) for device, priority, count in rows}


def summary(order: WorkOrder, now: float) -> dict[str, Any]:
    return {
        "code": order.code, "device_id": order.device_id, "site_id": order.site_id, "origin": order.origin,
        "failure_mode": order.failure_mode, "failure_mechanism": order.failure_mechanism,
        "failure_cause": order.failure_cause,
        "maintainable_item": order.maintainable_item, "priority": order.priority, "state": order.state,
        "title": order.title, "required_skill": order.required_skill, "occurrences": order.occurrences,
        "assigned_engineer_id": order.assigned_engineer_id, "created_at": order.created_at,
        "updated_at": order.updated_at, "last_occurrence_at": order.last_occurrence_at,
        "impact": order.impact, "escalation_level": order.escalation_level,
        "equipment_class": (order.context or {}).get("asset", {}).get("type"),
        "repeat_of": order.repeat_of, "scope": order.scope, "due_at": order.due_at, "closed_at": order.closed_at,
        "external_ref": order.external_ref,
        "sla": clocks.summary(order.sla, now),
    }


# What the list can be ordered by; a leading "-" is descending. P1 sorts before P4 as text does.
SORTS = {"created_at": WorkOrder.created_at, "updated_at": WorkOrder.updated_at, "priority": WorkOrder.priority,
         "state": WorkOrder.state, "code": WorkOrder.code}


def list_work_orders(
    session: Session, *, device_id: str | None = None, site_id: str | None = None, state: str | None = None,
    priority: str | None = None, engineer_id: str | None = None, failure_mode: str | None = None,
    origin: str | None = None, created_since: float | None = None, created_until: float | None = None,
    code: str | None = None, open_only: bool = False, sort: str = "-created_at", limit: int = 100, offset: int = 0,
    external_ref: str | None = None,
    site_ids: list[str] | None = None, now: float = 0.0,
) -> tuple[int, list[dict[str, Any]]]:
    """(how many match, one page of them in ``sort`` order); ``site_ids`` limits to those sites (a caller's);
    ``code`` matches any part of the code."""
    query = select(WorkOrder)
    filters = {
        WorkOrder.device_id: device_id, WorkOrder.site_id: site_id, WorkOrder.state: state,
        WorkOrder.priority: priority, WorkOrder.assigned_engineer_id: engineer_id,
        WorkOrder.failure_mode: failure_mode, WorkOrder.origin: origin, WorkOrder.external_ref: external_ref,
    }
    for column, value in filters.items():
        if value is not None:
            query = query.where(column == value)
    if created_since is not None:
        query = query.where(WorkOrder.created_at >= created_since)
    if created_until is not None:
        query = query.where(WorkOrder.created_at < created_until)
    if code:
        escaped = code.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        query = query.where(WorkOrder.code.like(f"%{escaped}%", escape="\\"))
    if open_only:
        query = query.where(WorkOrder.state.in_(OPEN))
    if site_ids is not None:
        query = query.where(WorkOrder.site_id.in_(site_ids))
    total = session.scalar(select(func.count()).select_from(query.order_by(None).subquery())) or 0
    column = SORTS[sort.lstrip("-")]
    order = (column.desc(), WorkOrder.id.desc()) if sort.startswith("-") else (column.asc(), WorkOrder.id.asc())
    page = session.scalars(query.order_by(*order).limit(limit).offset(offset))
    return total, [summary(order, now) for order in page]


def work_order(session: Session, code: str, now: float) -> dict[str, Any] | None:
    """One work order whole: context, assignment, SLA clocks at ``now``, closure and its event timeline."""
    order = session.scalar(select(WorkOrder).where(WorkOrder.code == code).options(selectinload(WorkOrder.events)))
    if order is None:
        return None
    return summary(order, now) | {
        "context": order.context,
        "assignment": order.assignment,
        "eta": order.eta,
        "offered_at": order.offered_at,
        "accepted_at": order.accepted_at,
        "declined_by": order.declined or [],
        "required_level": order.required_level,
        "required_certifications": order.required_certifications or [],
        "closure": order.closure or {},
        "events": [{"at": e.at, "kind": e.kind, "actor": e.actor, "data": e.data, "hash": e.hash}
                   for e in order.events],
    }


def list_anomalies(session: Session, *, device_id: str | None = None, since: float = 0.0,
                   limit: int = 100, offset: int = 0, device_ids: list[str] | None = None
                   ) -> tuple[int, list[dict[str, Any]]]:
    """(how many match, one page newest first); ``device_ids`` limits to those devices (a caller's sites)."""
    query = select(AnomalyRecord).where(AnomalyRecord.detected_at >= since)
    if device_id is not None:
        query = query.where(AnomalyRecord.device_id == device_id)
    if device_ids is not None:
        query = query.where(AnomalyRecord.device_id.in_(device_ids))
    total = session.scalar(select(func.count()).select_from(query.order_by(None).subquery())) or 0
    query = query.order_by(AnomalyRecord.detected_at.desc(), AnomalyRecord.id.desc()).limit(limit).offset(offset)
    return total, [
        {"device_id": a.device_id, "detected_at": a.detected_at, "detector": a.detector, "score": a.score,
         "severity": a.severity, "failure_mode": a.failure_mode, "metrics": a.metrics,
         "message": a.message, "work_order_code": a.work_order_code}
        for a in session.scalars(query)
    ]


def list_alarms(session: Session, *, device_id: str | None = None, since: float = 0.0, until: float | None = None,
                active: bool | None = None, limit: int = 100, offset: int = 0, device_ids: list[str] | None = None
                ) -> tuple[int, list[dict[str, Any]]]:
    """(how many match, one page of the alarm journal newest first); ``device_ids`` as for anomalies."""
    query = select(AlarmRecord).where(AlarmRecord.at >= since)
    if until is not None:
        query = query.where(AlarmRecord.at < until)
    if device_id is not None:
        query = query.where(AlarmRecord.device_id == device_id)
    if device_ids is not None:
        query = query.where(AlarmRecord.device_id.in_(device_ids))
    if active is not None:
        query = query.where(AlarmRecord.active == active)
    total = session.scalar(select(func.count()).select_from(query.order_by(None).subquery())) or 0
    query = query.order_by(AlarmRecord.at.desc(), AlarmRecord.id.desc()).limit(limit).offset(offset)
    return total, [
        {"device_id": a.device_id, "at": a.at, "code": a.code, "active": a.active, "severity": a.severity,
         "message": a.message, "source": a.source, "outcome": a.outcome, "work_order_code": a.work_order_code}
        for a in session.scalars(query)
    ]
