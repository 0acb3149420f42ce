"""The webhook outbox: events queued for each subscription in the transaction that made them.

An event exists exactly when its outbox rows do (one commit), so a crash, a restart or a kill -9
loses nothing that was committed; delivery reads from here, retries from here and logs here.
Plain functions over a session the caller opens.

>>> wants(["pmgw.workorder.*"], [], "pmgw.workorder.created", "north"), wants(["pmgw.sla.breach"], [], "pmgw.sla.warning", "")
(True, False)
>>> wants([], ["south"], "pmgw.anomaly.detected", "north"), wants([], ["south"], "pmgw.webhook.disabled", "")
(False, True)
"""

from __future__ import annotations

import random
from typing import Any, Collection

from sqlalchemy import Row, func, insert, select
from sqlalchemy.orm import Session

from ticketing.cloudevents import Envelope, to_json
from ticketing.models import OutboxMessage, WebhookSubscription

PENDING, DELIVERED, DEAD = "pending", "delivered", "dead"
# How many undelivered messages of one subscription one look at the outbox considers (the oldest first).
SCAN_LIMIT = 2000
# How many messages of one subscription and ordering key go out in one round, one after the other.
CHAIN_LIMIT = 50


def wants(types: list[str], sites: list[str], event_type: str, site: str) -> bool:
    """Whether a subscription to ``types`` (exact, or ``prefix.*``) at ``sites`` takes this event. An event
    of no site (a webhook's own) goes to every subscription of its type."""
    typed = not types or any(event_type == t or (t.endswith("*") and event_type.startswith(t[:-1])) for t in types)
    return typed and (not sites or not site or site in sites)


def enqueue(session: Session, envelopes: list[Envelope], now: float) -> int:
    """Queue each event for every enabled subscription that wants it; how many messages were queued."""
    if not envelopes:
        return 0
    subscriptions = session.scalars(select(WebhookSubscription).where(WebhookSubscription.enabled.is_(True))).all()
    rows: list[dict[str, Any]] = []
    for envelope in envelopes:
        body: str | None = None
        for subscription in subscriptions:
            if not wants(subscription.types, subscription.sites, envelope.type, envelope.site):
                continue
            if subscription.exclude_own and envelope.actor and envelope.actor == subscription.created_by:
                continue
            body = body or to_json(envelope).decode()
            rows.append({"subscription_id": subscription.id, "event_id": envelope.id, "event_type": envelope.type,
                         "ordering_key": envelope.ordering_key, "body": body, "created_at": now, "state": PENDING,
                         "attempts": 0, "next_attempt_at": now})
    if rows:
        # One bulk insert in the caller's transaction: an event for ten subscriptions is ten rows, and as
        # objects of the session they were about a tenth of the ticketing's time in bench.webhooks.
        session.execute(insert(OutboxMessage), rows)
    return len(rows)


def chain_of(subscription_id: int, ordering_key: str, message_id: int) -> tuple[int, str]:
    """What a message must go out in order with: its subscription's messages of the same ordering key; a
    message without one is a chain of its own."""
    return subscription_id, ordering_key or f"message {message_id}"


def deliverable(session: Session, now: float, busy: Collection[tuple[int, str]] = (), sent: Collection[int] = ()
                ) -> list[Row[Any]]:
    """The messages to send now, oldest first: per subscription and ordering key, the oldest undelivered
    message if it is due, and the due ones queued behind it (up to ``CHAIN_LIMIT``). The deliverer sends
    each such chain in order and stops at its first failure, so a work order's events arrive in the
    order they happened and a retry holds back the later ones, while events queued together go out
    together. ``busy``: chains (subscription, ordering key) the deliverer is sending already, held whole;
    ``sent``: messages it delivered and has not recorded yet, taken as delivered."""
    # Per subscription, so a receiver that has been down for long (a deep backlog) never hides the others';
    # the bodies are loaded only for what goes out.
    subscriptions = session.scalars(select(OutboxMessage.subscription_id).where(OutboxMessage.state == PENDING)
                                    .distinct()).all()
    chains: dict[tuple[int, str], int] = {}
    held: set[tuple[int, str]] = set(busy)
    due: list[int] = []
    for subscription in subscriptions:
        for row_id, key, next_at in session.execute(
                select(OutboxMessage.id, OutboxMessage.ordering_key, OutboxMessage.next_attempt_at)
                .where(OutboxMessage.state == PENDING, OutboxMessage.subscription_id == subscription)
                .order_by(OutboxMessage.id).limit(SCAN_LIMIT)):
            if row_id in sent:
                continue
            if not key:  # no order to keep: each goes when it is due
                if next_at <= now and chain_of(subscription, key, row_id) not in held:
                    due.append(row_id)
                continue
            chain = (subscription, key)
            if chain in held:
                continue
            if next_at > now or chains.get(chain, 0) >= CHAIN_LIMIT:
                held.add(chain)  # everything behind it waits
                continue
            chains[chain] = chains.get(chain, 0) + 1
            due.append(row_id)
    if not due:
        return []
    return list(session.execute(
        select(OutboxMessage.id, OutboxMessage.subscription_id, OutboxMessage.event_id, OutboxMessage.body,
               OutboxMessage.attempts, OutboxMessage.ordering_key)
        .where(OutboxMessage.id.in_(due)).order_by(OutboxMessage.id)))


def next_attempt(attempts: int, schedule: list[float], now: float, jitter: float = 0.2) -> float | None:
    """When to try again after ``attempts`` failures (the schedule's step, +-``jitter``); None: give up.

    >>> next_attempt(1, [5.0, 60.0], 100.0, jitter=0) , next_attempt(3, [5.0, 60.0], 100.0)
    (105.0, None)
    """
    if attempts > len(schedule):
        return None
    step = schedule[attempts - 1]
    return now + step * (1 + random.uniform(-jitter, jitter))


def counts(session: Session, subscription_id: int) -> dict[str, int]:
    rows = session.execute(select(OutboxMessage.state, func.count()).where(
        OutboxMessage.subscription_id == subscription_id).group_by(OutboxMessage.state))
    return {PENDING: 0, DELIVERED: 0, DEAD: 0} | {state: count for state, count in rows}


def delivery(row: OutboxMessage) -> dict[str, Any]:
    return {"id": row.id, "event_id": row.event_id, "event_type": row.event_type, "state": row.state,
            "attempts": row.attempts, "created_at": row.created_at, "next_attempt_at": row.next_attempt_at,
            "delivered_at": row.delivered_at, "last_status": row.last_status, "last_error": row.last_error,
            "last_latency_ms": row.last_latency_ms}
