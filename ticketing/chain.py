"""The tamper-evident event chain of a work order.

Every event stores the SHA-256 of its content and of the event before it, so an event changed,
removed or inserted behind the application's back breaks the chain from that event on.
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson
from sqlalchemy import select
from sqlalchemy.orm import Session

from ticketing.models import Event, WorkOrder

GENESIS_HASH = "0" * 64


def event_hash(previous: str, code: str, kind: str, at: float, actor: str, data: dict[str, Any]) -> str:
    content = orjson.dumps(
        {"previous": previous, "code": code, "kind": kind, "at": at, "actor": actor, "data": data},
        option=orjson.OPT_SORT_KEYS,
    )
    return hashlib.sha256(content).hexdigest()


def verify_chain(session: Session, code: str) -> dict[str, Any] | None:
    """Recompute the chain of one work order: where it breaks, if it does (None: no such order)."""
    order = session.scalar(select(WorkOrder).where(WorkOrder.code == code))
    if order is None:
        return None
    events = session.scalars(select(Event).where(Event.work_order_id == order.id).order_by(Event.id)).all()
    previous = GENESIS_HASH
    for index, event in enumerate(events):
        if event_hash(previous, order.code, event.kind, event.at, event.actor, event.data) != event.hash:
            return {"code": code, "valid": False, "events": len(events), "broken_at": index,
                    "reason": f"event {index} ({event.kind}) does not match its hash: "
                              "it, or an event before it, was changed or removed"}
        previous = event.hash
    return {"code": code, "valid": True, "events": len(events), "broken_at": None, "reason": None}
