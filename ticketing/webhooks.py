"""Webhook subscriptions and their delivery log, over the work-order database (the outbox lives there).

The deliverer (``gateway.webhooks``) asks for what is due and reports each attempt back; the API
manages subscriptions and reads the log. Nothing here sends anything.
"""

from __future__ import annotations

import base64
import secrets
from typing import Any, Callable, Collection, Protocol

from sqlalchemy import bindparam, delete, func, select, update
from sqlalchemy.orm import Session, sessionmaker

from ticketing import outbox
from ticketing.cloudevents import webhook_disabled_envelope
from ticketing.models import OutboxMessage, WebhookSubscription


PURPOSE = "webhook secrets"


class SecretVault(Protocol):
    """Encrypts what a database must keep but not show (the gateway's keyring)."""

    def seal(self, purpose: str, text: str) -> str: ...

    def unseal(self, purpose: str, sealed: str) -> str: ...


def new_secret() -> str:
    """A Standard Webhooks signing secret: ``whsec_`` and 32 random bytes in base64."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def _subscription(row: WebhookSubscription, session: Session) -> dict[str, Any]:
    return {"id": row.id, "url": row.url, "types": row.types, "sites": row.sites, "enabled": row.enabled,
            "disabled_reason": row.disabled_reason, "created_by": row.created_by, "created_at": row.created_at,
            "failing_since": row.failing_since, "exclude_own": row.exclude_own,
            "deliveries": outbox.counts(session, row.id)}


class WebhookStore:
    def __init__(self, sessions: sessionmaker[Session], reads: sessionmaker[Session], clock: Callable[[], float],
                 source: str, vault: SecretVault) -> None:
        self.sessions = sessions
        self.reads = reads  # read-only: no write lock taken (see ticketing.database.make_reader)
        self.vault = vault
        self.clock = clock
        self.source = source
        # Told after a commit queued something: the deliverer sends at once instead of at its next look.
        self.listeners: list[Callable[[], None]] = []
        self._secrets: dict[str, str] = {}  # sealed -> unsealed

    def wake(self) -> None:
        for listener in list(self.listeners):
            listener()

    # -- subscriptions ------------------------------------------------------------------

    def create(self, url: str, types: list[str], sites: list[str], actor: str, exclude_own: bool = False
               ) -> dict[str, Any]:
        """A new subscription; the answer carries its secret, the only time it is shown."""
        secret = new_secret()
        with self.sessions.begin() as session:
            row = WebhookSubscription(url=url, types=types, sites=sites, secret=self.vault.seal(PURPOSE, secret),
                                      enabled=True,
                                      created_by=actor, created_at=self.clock(), exclude_own=exclude_own)
            session.add(row)
            session.flush()
            made = _subscription(row, session) | {"secret": secret}
        self.wake()  # the first subscription starts the deliverer
        return made

    def ensure(self, url: str, types: list[str], actor: str) -> int:
        """The subscription to ``url`` (made if missing, its types brought to ``types``): for a configured
        consumer such as the MQTT events broker, which needs no secret."""
        with self.sessions.begin() as session:
            row = session.scalar(select(WebhookSubscription).where(WebhookSubscription.url == url))
            if row is None:
                row = WebhookSubscription(url=url, types=types, sites=[], secret="", enabled=True, created_by=actor,
                                          created_at=self.clock(), exclude_own=False)
                session.add(row)
            row.types, row.enabled = types, True
            session.flush()
            return row.id

    def page(self, limit: int, offset: int) -> tuple[int, list[dict[str, Any]]]:
        with self.reads() as session:
            total = session.scalar(select(func.count()).select_from(WebhookSubscription)) or 0
            rows = session.scalars(select(WebhookSubscription).order_by(WebhookSubscription.id)
                                   .limit(limit).offset(offset)).all()
            return total, [_subscription(row, session) for row in rows]

    def get(self, subscription_id: int) -> dict[str, Any] | None:
        with self.reads() as session:
            row = session.get(WebhookSubscription, subscription_id)
            return _subscription(row, session) if row is not None else None

    def delete(self, subscription_id: int) -> bool:
        with self.sessions.begin() as session:
            row = session.get(WebhookSubscription, subscription_id)
            if row is None:
                return False
            session.execute(delete(OutboxMessage).where(OutboxMessage.subscription_id == subscription_id))
            session.delete(row)
            return True

    def enable(self, subscription_id: int) -> dict[str, Any] | None:
        with self.sessions.begin() as session:
            row = session.get(WebhookSubscription, subscription_id)
            if row is None:
                return None
            row.enabled, row.disabled_reason, row.failing_since = True, None, None
            enabled = _subscription(row, session)
        self.wake()  # what waited for it goes now
        return enabled

    # -- the delivery log ----------------------------------------------------------------

    def deliveries(self, subscription_id: int, state: str | None, limit: int, offset: int
                   ) -> tuple[int, list[dict[str, Any]]]:
        """Newest first: every message of the subscription with its attempts, status and latency."""
        with self.reads() as session:
            query = select(OutboxMessage).where(OutboxMessage.subscription_id == subscription_id)
            if state is not None:
                query = query.where(OutboxMessage.state == state)
            total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
            rows = session.scalars(query.order_by(OutboxMessage.id.desc()).limit(limit).offset(offset)).all()
            return total, [outbox.delivery(row) for row in rows]

    def redeliver(self, subscription_id: int, delivery_id: int) -> dict[str, Any] | None:
        """Send a message again now (a dead one, or a delivered one the receiver lost)."""
        with self.sessions.begin() as session:
            row = session.get(OutboxMessage, delivery_id)
            if row is None or row.subscription_id != subscription_id:
                return None
            row.state, row.next_attempt_at = outbox.PENDING, self.clock()
            return outbox.delivery(row)

    # -- for the deliverer ------------------------------------------------------------------

    def due(self, busy: Collection[tuple[int, str]] = (), sent: Collection[int] = ()) -> list[dict[str, Any]]:
        """What to send now, oldest first (``outbox.deliverable``: ``busy`` chains held, ``sent`` messages
        taken as delivered): message id, subscription, URL, secret, event id, body, attempts so far,
        ordering key."""
        with self.reads() as session:
            rows = outbox.deliverable(session, self.clock(), busy, sent)
            subscriptions = {s.id: s for s in session.scalars(select(WebhookSubscription).where(
                WebhookSubscription.id.in_({row.subscription_id for row in rows})))}
            secrets_of = {s.id: self._unsealed(s.secret) for s in subscriptions.values()}
            return [{"id": row.id, "subscription_id": row.subscription_id, "url": subscriptions[row.subscription_id].url,
                     "secret": secrets_of[row.subscription_id], "event_id": row.event_id, "body": row.body,
                     "attempts": row.attempts, "ordering_key": row.ordering_key}
                    for row in rows if subscriptions[row.subscription_id].enabled]

    def _unsealed(self, stored: str) -> str:
        # "" for consumers that sign nothing (MQTT, e-mail). Kept once unsealed: the deliverer asks many
        # times a second, and key derivation is most of the cost.
        if not stored.startswith("sealed:"):
            return stored
        if stored not in self._secrets:
            self._secrets[stored] = self.vault.unseal(PURPOSE, stored)
        return self._secrets[stored]

    def record_many(self, outcomes: list[tuple[int, bool, int | None, str | None, float]], schedule: list[float],
                    disable_after_s: float) -> None:
        """Attempts' outcomes, in one commit: delivered; or the next try on the schedule, a dead letter
        after its last step, and a subscription failing for ``disable_after_s`` disabled (an event says so)."""
        disabled = False
        now = self.clock()
        delivered = [outcome for outcome in outcomes if outcome[1]]
        failed = [outcome for outcome in outcomes if not outcome[1]]
        with self.sessions.begin() as session:
            if delivered:
                # The common case in plain statements (a busy round delivers hundreds): no objects loaded.
                connection = session.connection()
                connection.execute(
                    update(OutboxMessage.__table__)
                    .where(OutboxMessage.__table__.c.id == bindparam("delivery_id"),
                           OutboxMessage.__table__.c.state == outbox.PENDING)
                    .values(state=outbox.DELIVERED, delivered_at=now, attempts=OutboxMessage.__table__.c.attempts + 1,
                            last_status=bindparam("status"), last_error=None, last_latency_ms=bindparam("latency")),
                    [{"delivery_id": delivery_id, "status": status, "latency": round(latency_ms, 1)}
                     for delivery_id, _, status, _, latency_ms in delivered])
                connection.execute(
                    update(WebhookSubscription.__table__)
                    .where(WebhookSubscription.__table__.c.id.in_(select(OutboxMessage.subscription_id).where(
                        OutboxMessage.id.in_([outcome[0] for outcome in delivered]))),
                           WebhookSubscription.__table__.c.failing_since.is_not(None))
                    .values(failing_since=None))
            if failed:
                disabled = self._record_failures(session, failed, now, schedule, disable_after_s)
        if disabled:
            self.wake()

    def _record_failures(self, session: Session, outcomes: list[tuple[int, bool, int | None, str | None, float]],
                         now: float, schedule: list[float], disable_after_s: float) -> bool:
        disabled = False
        # Loaded at once (one query each), then worked on in the session's identity map.
        # (A get per row with its own lock was a SELECT per delivery: most of a busy round's time.)
        rows = {row.id: row for row in session.scalars(select(OutboxMessage).where(
            OutboxMessage.id.in_([outcome[0] for outcome in outcomes])).with_for_update())}
        subscriptions = {subscription.id: subscription for subscription in session.scalars(
            select(WebhookSubscription).where(
                WebhookSubscription.id.in_({row.subscription_id for row in rows.values()})))}
        for delivery_id, _, status, error, latency_ms in outcomes:
            row = rows.get(delivery_id)
            if row is not None:
                disabled |= self._record_failure(session, row, subscriptions.get(row.subscription_id), now,
                                                 status, error, latency_ms, schedule, disable_after_s)
        return disabled

    def _record_failure(self, session: Session, row: OutboxMessage, subscription: WebhookSubscription | None,
                        now: float, status: int | None, error: str | None, latency_ms: float, schedule: list[float],
                        disable_after_s: float) -> bool:
        if row.state != outbox.PENDING:
            return False
        row.attempts += 1
        row.last_status, row.last_error, row.last_latency_ms = status, error, round(latency_ms, 1)
        retry_at = outbox.next_attempt(row.attempts, schedule, now)
        if retry_at is None:
            row.state = outbox.DEAD
        else:
            row.next_attempt_at = retry_at
        if subscription is None:
            return False
        subscription.failing_since = subscription.failing_since or now
        if subscription.enabled and now - subscription.failing_since >= disable_after_s:
            reason = (f"every delivery failed for {(now - subscription.failing_since) / 3600:.1f} h "
                      f"(last: {error or status})")
            subscription.enabled, subscription.disabled_reason = False, reason
            session.flush()
            outbox.enqueue(session, [webhook_disabled_envelope(self.source, subscription.id, subscription.url,
                                                                now, reason)], now)
            return True
        return False
