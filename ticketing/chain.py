"""The tamper-evident, keyed event chain of a work order.

Every event carries an HMAC (a key the gateway keeps outside the database) over
its content, the previous event's MAC, and a digest of the order's own fields
(failure coding, state, assignment, closure: parts, labour, cause) as they were
when the event was committed. So:

- an event changed, removed or inserted in the middle breaks the chain from there;
- re-hashing the events with a published hash does not help: without the key no
  MAC verifies;
- editing the order row (parts, labour, failure cause...) no longer matches the
  digest sealed into its last event;
- removing the *last* events leaves a shorter chain that verifies by itself: the
  chain's head and length are anchored elsewhere (the gateway's audit log) and
  compared here.
"""

from __future__ import annotations

import hashlib
from typing import Any, Callable, Iterator, Protocol

import orjson
from sqlalchemy import Connection, select
from sqlalchemy.orm import Session

from ticketing.models import Event, WorkOrder

GENESIS_HASH = "0" * 64
PURPOSE = "work-order chain"
# The order's fields a chain seals; every change to one of them is an event.
SEALED_FIELDS = ("code", "device_id", "site_id", "origin", "failure_mode", "failure_mechanism", "failure_cause",
                 "maintainable_item", "priority", "state", "title", "assigned_engineer_id", "closure", "created_at",
                 "repeat_of", "due_at")


class ChainSigner(Protocol):
    """Keyed MACs (the gateway's keyring): ``mac`` with the current key, ``verify`` with the one named."""

    def mac(self, purpose: str, data: bytes) -> tuple[str, str]: ...

    def verify(self, purpose: str, key_id: str, data: bytes, tag: str) -> bool: ...


class ChainAnchors(Protocol):
    """Where chain heads are anchored outside the work-order tables (the gateway's audit log)."""

    def anchor_many(self, heads: list[tuple[str, str, int, str]], within: Connection) -> Callable[[], None]:
        """Anchor ``(code, head, length, actor)`` heads, in the caller's transaction (``within``) where the
        store allows; returns what finishes the anchoring once that transaction has committed."""
        ...

    def shares(self, within: Connection) -> bool:
        """Whether anchors written in ``within``'s transaction commit with it (the log in the same database)."""
        ...

    def latest_anchor(self, code: str) -> dict[str, Any] | None: ...


def row_digest(order: Any) -> str:
    fields = {name: getattr(order, name) for name in SEALED_FIELDS}
    return hashlib.sha256(orjson.dumps(fields, option=orjson.OPT_SORT_KEYS)).hexdigest()


def event_content(previous: str, code: str, event: Any) -> bytes:
    return orjson.dumps(
        {"previous": previous, "code": code, "kind": event.kind, "at": event.at, "actor": event.actor,
         "data": event.data, "row": event.row_digest},
        option=orjson.OPT_SORT_KEYS,
    )


def seal(signer: ChainSigner, previous: str, code: str, event: Event, digest: str) -> None:
    """Fill in the event's row digest, key id and MAC."""
    event.row_digest = digest
    event.key_id, event.hash = signer.mac(PURPOSE, event_content(previous, code, event))


def verify_chain(session: Session, signer: ChainSigner, code: str, anchor: dict[str, Any] | None
                 ) -> dict[str, Any] | None:
    """Recompute the chain of one work order: where it breaks, if it does (None: no such order).

    ``anchor`` is the last ``{"head", "length"}`` the gateway recorded for this order outside the
    database; a chain shorter than it, or not passing through its head, lost events.
    """
    order = session.scalar(select(WorkOrder).where(WorkOrder.code == code))
    if order is None:
        return None
    events = session.scalars(select(Event).where(Event.work_order_id == order.id).order_by(Event.id)).all()
    return verify_events(order, list(events), signer, anchor)


def verify_all(session: Session, signer: ChainSigner, anchors: dict[str, dict[str, Any]]
               ) -> Iterator[tuple[Any, dict[str, Any]]]:
    """Every order's verdict, the whole store in two streamed queries (a backup or a restore is checked whole).

    Plain rows, not ORM objects (the columns are named as the attributes): building a million entities would
    cost more than checking them."""
    columns = [WorkOrder.__table__.c[name] for name in ("id", "updated_at", *SEALED_FIELDS)]  # not the context
    orders = session.execute(select(*columns).order_by(WorkOrder.id).execution_options(yield_per=2000))
    events = iter(session.execute(select(Event.__table__).order_by(Event.work_order_id, Event.id)
                                  .execution_options(yield_per=5000)))
    pending = next(events, None)
    for order in orders:
        mine = []
        while pending is not None and pending.work_order_id < order.id:
            pending = next(events, None)  # events of no order: not part of any chain
        while pending is not None and pending.work_order_id == order.id:
            mine.append(pending)
            pending = next(events, None)
        yield order, verify_events(order, mine, signer, anchors.get(order.code))


def verify_events(order: Any, events: list[Any], signer: ChainSigner, anchor: dict[str, Any] | None
                  ) -> dict[str, Any]:
    """The verdict on one order's chain, given its events in order (entities or plain rows alike)."""
    code = order.code

    def broken(index: int | None, reason: str) -> dict[str, Any]:
        return {"code": code, "valid": False, "events": len(events), "broken_at": index, "reason": reason}

    previous = GENESIS_HASH
    for index, event in enumerate(events):
        if event.key_id is None or event.row_digest is None:
            return broken(index, f"event {index} ({event.kind}) carries no keyed MAC: written without the "
                                 "gateway's key (or before keyed chains), its integrity cannot be proven")
        if not signer.verify(PURPOSE, event.key_id, event_content(previous, code, event), event.hash):
            return broken(index, f"event {index} ({event.kind}) does not match its MAC: it, or an event before "
                                 "it, was changed or removed, or it was written without the gateway's key")
        if anchor is not None and index + 1 == anchor["length"] and event.hash != anchor["head"]:
            return broken(index, f"event {index} is not the head the audit log anchored: the history was rewritten")
        previous = event.hash
    if anchor is not None and len(events) < anchor["length"]:
        return broken(len(events), f"the audit log anchored {anchor['length']} events, {len(events)} are left: "
                                   "the last events were removed")
    if events and events[-1].row_digest != row_digest(order):
        return broken(len(events) - 1, "the work order's fields do not match what its last event sealed: the "
                                       "order was edited behind the application's back")
    if anchor is None and events:
        return broken(None, "no anchor of this chain in the audit log: it cannot be told complete")
    return {"code": code, "valid": True, "events": len(events), "broken_at": None, "reason": None}
