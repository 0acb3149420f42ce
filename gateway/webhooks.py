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
from ticketing.webhooks import WebhookStore

log = logging.getLogger(__name__)

# About 31 hours in all, as receivers of Svix-style webhooks expect: a receiver down over a night and a
# day still gets everything.
DEFAULT_SCHEDULE_S = [5.0, 30.0, 120.0, 600.0, 1800.0, 3600.0, 7200.0, 14400.0, 28800.0, 28800.0, 28800.0]
CONTENT_TYPE = "application/cloudevents+json"


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
        while True:
            woken.clear()
            try:
                due = await asyncio.to_thread(self.store.due)
            except Exception:  # the database may be away a moment: the outbox keeps everything
                log.exception("webhooks: reading the outbox failed")
                due = []
            if not due:
                # Until a commit queues something, or the next retry may be due.
                try:
                    await asyncio.wait_for(woken.wait(), self.config.poll_interval_s)
                except asyncio.TimeoutError:
                    pass
                continue
            # Every chain at once, ``concurrency`` in flight (a slow receiver holds only its own slots); within
            # a chain (one subscription, one work order) one after the other, up to the first failure.
            slots = asyncio.Semaphore(self.config.concurrency)
            chains: dict[tuple[int, str], list[dict[str, Any]]] = {}
            for message in due:
                # No ordering key, no order to keep: a chain of its own.
                key = message["ordering_key"] or f"message {message['id']}"
                chains.setdefault((message["subscription_id"], key), []).append(message)

            async def send(chain: list[dict[str, Any]]) -> list[tuple[int, bool, int | None, str | None, float]]:
                outcomes = []
                for message in chain:
                    async with slots:
                        outcomes.append(await self._send(client, message))
                    if not outcomes[-1][1]:
                        break  # the rest of this work order's events wait for this one
                return outcomes

            outcomes = [outcome for sent in await asyncio.gather(*(send(chain) for chain in chains.values()))
                        for outcome in sent]
            try:  # one commit for the round: the receivers' speed, not the disk's, sets the pace
                await asyncio.to_thread(self.store.record_many, list(outcomes), self.config.retry_schedule_s,
                                        self.config.disable_after_s)
            except Exception:  # not recorded: they stay pending and go again (receivers dedupe by webhook-id)
                log.exception("webhooks: recording %d deliveries failed", len(outcomes))

    async def _send(self, client: aiohttp.ClientSession, message: dict[str, Any]
                    ) -> tuple[int, bool, int | None, str | None, float]:
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
        return {"attempts": self.attempts, "delivered": self.delivered, "failed": self.failed,
                "last_error": self.last_error}
