"""Delivering the outbox: each due message POSTed to its subscriber, signed per Standard Webhooks.

Headers ``webhook-id`` (the event's id: the same at every retry, so a receiver drops duplicates),
``webhook-timestamp`` and ``webhook-signature`` (``v1,<base64 HMAC-SHA256>`` over
``id.timestamp.body``), made by the ``standardwebhooks`` library that receivers verify with. The body
is the CloudEvent in structured JSON. A 2xx answer is a delivery; anything else, or no answer, is
tried again on ``webhooks.retry_schedule_s`` (with jitter), then kept as a dead letter.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime, timezone
from typing import Any

import aiohttp
from pydantic import BaseModel, ConfigDict, Field
from standardwebhooks import Webhook

from gateway.mailer import Mailer
from gateway.mqtt_out import EventPublisher
from ticketing.outbox import chain_of
from ticketing.webhooks import WebhookStore

log = logging.getLogger(__name__)

# About 31 hours in all, as receivers of Svix-style webhooks expect: a receiver down over a night and a
# day still gets everything.
DEFAULT_SCHEDULE_S = [5.0, 30.0, 120.0, 600.0, 1800.0, 3600.0, 7200.0, 14400.0, 28800.0, 28800.0, 28800.0]
CONTENT_TYPE = "application/cloudevents+json"

# The least time between two looks at the outbox (a query per subscription each).
LOOK_GAP_S = 0.02
# (subscription id, ordering key): what must go out in order.
Chain = tuple[int, str]
# One attempt: (message id, delivered, HTTP status, error, latency in ms).
Outcome = tuple[int, bool, int | None, str | None, float]


class WebhooksConfig(BaseModel):
    """How the outbox is delivered."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(True, description="deliver the outbox (off: events are still queued)")
    retry_schedule_s: list[float] = Field(default_factory=lambda: list(DEFAULT_SCHEDULE_S), min_length=1,
                                          description="wait before each retry; after the last, a dead letter")
    disable_after_s: float = Field(5 * 86400.0, gt=0, description="a subscription failing this long is disabled")
    timeout_s: float = Field(10.0, gt=0, le=300, description="a receiver's answer must come within this")
    poll_interval_s: float = Field(1.0, gt=0, le=60, description="how often the outbox is looked at when no commit "
                                   "woke the deliverer (retries fall due)")
    concurrency: int = Field(16, ge=1, le=256, description="deliveries in flight at once")


def chains(due: list[dict[str, Any]]) -> dict[Chain, list[dict[str, Any]]]:
    """The due messages by chain, each chain in the outbox's order.

    >>> [(chain, [m["id"] for m in messages]) for chain, messages in chains([
    ...     {"id": 1, "subscription_id": 7, "ordering_key": "WO-1"}, {"id": 2, "subscription_id": 7, "ordering_key": ""},
    ...     {"id": 3, "subscription_id": 7, "ordering_key": "WO-1"}]).items()]
    [((7, 'WO-1'), [1, 3]), ((7, 'message 2'), [2])]
    """
    grouped: dict[Chain, list[dict[str, Any]]] = {}
    for message in due:
        grouped.setdefault(chain_of(message["subscription_id"], message["ordering_key"], message["id"]),
                           []).append(message)
    return grouped


def signed_headers(secret: str, message_id: str, body: str, now: float) -> dict[str, str]:
    timestamp = datetime.fromtimestamp(int(now), timezone.utc)
    return {"webhook-id": message_id, "webhook-timestamp": str(int(now)),
            "webhook-signature": Webhook(secret).sign(message_id, timestamp, body), "content-type": CONTENT_TYPE}


class WebhookDeliverer:
    def __init__(self, store: WebhookStore, config: WebhooksConfig, mqtt: EventPublisher | None = None,
                 mailer: Mailer | None = None) -> None:
        self.store = store
        self.config = config
        self.mqtt = mqtt  # the events broker, for the outbox's mqtt:// subscription
        self.mailer = mailer  # the mail server, for its smtp:// one
        self.looks = 0  # at the outbox
        self.attempts = 0
        self.delivered = 0
        self.failed = 0
        self.last_error: str | None = None

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        woken = asyncio.Event()

        def wake() -> None:  # from the thread that committed
            loop.call_soon_threadsafe(woken.set)

        self.store.listeners.append(wake)
        try:
            # aiohttp, not httpx: httpx's pool looks at every connection for every request, so fanning
            # out to ten receivers 64 at a time cost about 5 ms of the event loop per delivery.
            connector = aiohttp.TCPConnector(limit=self.config.concurrency)
            timeout = aiohttp.ClientTimeout(total=self.config.timeout_s)
            async with aiohttp.ClientSession(connector=connector, timeout=timeout) as client:
                await self._deliver_forever(client, woken)
        finally:
            self.store.listeners.remove(wake)

    async def _deliver_forever(self, client: aiohttp.ClientSession, woken: asyncio.Event) -> None:
        """Chains (one subscription, one work order) go out as soon as they are due, each on its own, up to
        ``concurrency`` deliveries in flight: a slow receiver holds only its own chains. Outcomes are recorded
        in batches, one commit each, while the sending goes on: a chain delivered whole lets its next message
        go at once; a chain that failed waits until its retry time is recorded."""
        slots = asyncio.Semaphore(self.config.concurrency)
        busy: set[Chain] = set()  # being sent, or failed and not recorded yet
        unrecorded: set[int] = set()  # delivered, not recorded yet: the outbox still calls them pending
        finished: list[Outcome] = []
        failed: list[Chain] = []
        outcomes_ready = asyncio.Event()
        sending: set[asyncio.Task[None]] = set()

        async def send(chain: Chain, messages: list[dict[str, Any]]) -> None:
            outcomes: list[Outcome] = []
            for message in messages:
                async with slots:
                    outcomes.append(await self._send(client, message))
                if not outcomes[-1][1]:
                    break  # the rest of this work order's events wait for this one
            unrecorded.update(outcome[0] for outcome in outcomes if outcome[1])
            finished.extend(outcomes)
            outcomes_ready.set()
            if outcomes[-1][1]:
                busy.discard(chain)
                woken.set()  # what queued behind them may go now
            else:
                failed.append(chain)

        async def record_forever() -> None:
            while True:
                await outcomes_ready.wait()
                outcomes_ready.clear()
                outcomes, held = finished[:], failed[:]
                del finished[:], failed[:]
                try:  # one commit for what finished meanwhile: the receivers' speed, not the disk's, sets the pace
                    await asyncio.to_thread(self.store.record_many, outcomes, self.config.retry_schedule_s,
                                            self.config.disable_after_s)
                except Exception:  # not recorded: they stay pending and go again (receivers dedupe by webhook-id)
                    log.exception("webhooks: recording %d deliveries failed", len(outcomes))
                unrecorded.difference_update(outcome[0] for outcome in outcomes if outcome[1])
                busy.difference_update(held)
                if held:
                    woken.set()

        recorder = asyncio.create_task(record_forever())
        loop = asyncio.get_running_loop()
        looked_at = -LOOK_GAP_S
        try:
            while True:
                # Busy, every commit and every chain delivered asks for a look: they are taken together.
                await asyncio.sleep(looked_at + LOOK_GAP_S - loop.time())
                looked_at = loop.time()
                woken.clear()
                self.looks += 1
                try:
                    # As things stand when the look begins: what changes meanwhile is left out of this look
                    # (a chain busy then is held whole) and seen by the next.
                    due = await asyncio.to_thread(self.store.due, frozenset(busy), frozenset(unrecorded))
                except Exception:  # the database may be away a moment: the outbox keeps everything
                    log.exception("webhooks: reading the outbox failed")
                    due = []
                for chain, messages in chains(due).items():
                    busy.add(chain)
                    task = asyncio.create_task(send(chain, messages))
                    sending.add(task)
                    task.add_done_callback(sending.discard)
                # Until a commit queues something, a chain is through, or a retry may be due.
                try:
                    await asyncio.wait_for(woken.wait(), self.config.poll_interval_s)
                except asyncio.TimeoutError:
                    pass
        finally:
            for task in (recorder, *sending):
                task.cancel()
            await asyncio.gather(recorder, *sending, return_exceptions=True)

    async def _send(self, client: aiohttp.ClientSession, message: dict[str, Any]) -> Outcome:
        """One attempt: (message id, delivered, HTTP status, error, latency in ms)."""
        started = time.perf_counter()
        status: int | None = None
        try:
            if message["url"].startswith("mqtt://"):
                if self.mqtt is None:
                    raise RuntimeError("no mqtt_out configured for this subscription")
                ok, error = await asyncio.to_thread(self.mqtt.publish, message["body"])
            elif message["url"].startswith("smtp://"):
                if self.mailer is None:
                    raise RuntimeError("no smtp configured for this subscription")
                ok, error = await asyncio.to_thread(self.mailer.send, message["body"])
            else:
                headers = signed_headers(message["secret"], message["event_id"], message["body"], time.time())
                async with client.post(message["url"], data=message["body"].encode(), headers=headers,
                                       allow_redirects=False) as response:
                    status = response.status
                    # Read to the end (so the connection goes back to the pool), but never more than this.
                    await response.content.read(65536)
                ok = 200 <= status < 300
                error = None if ok else f"HTTP {status}"
        except Exception as failure:  # noqa: BLE001 - any failure to send (a URL no client can use, too) is a failed attempt
            ok, error = False, f"{type(failure).__name__}: {failure}"[:500]
        latency_ms = (time.perf_counter() - started) * 1000
        self.attempts += 1
        if ok:
            self.delivered += 1
        else:
            self.failed += 1
            self.last_error = error
        return message["id"], ok, status, error, latency_ms

    def diagnostics(self) -> dict[str, Any]:
        return {"looks": self.looks, "attempts": self.attempts, "delivered": self.delivered, "failed": self.failed,
                "last_error": self.last_error}
