"""Server-sent events for the dashboard: work-order events as they happen, and a tick every
``TICK_S`` with the plant clock, the connector strip and what changed in the fleet.

One snapshot of the fleet serves every open stream (``FleetWatch``), so ten browsers
cost one set of queries per tick, not ten.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

from gateway.auth.store import Principal
from gateway.core import WorkOrderEvent
from gateway.dashboard.fleet import ConnectorRates, fleet_entries

if TYPE_CHECKING:
    from gateway.app import Gateway

TICK_S = 2.0
QUEUE_EVENTS = 1000


def sse(kind: str, data: Any) -> str:
    return f"event: {kind}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


class FleetWatch:
    """The fleet and connector strip, recomputed at most once per tick whoever asks."""

    def __init__(self, gateway: "Gateway") -> None:
        self.gateway = gateway
        self.rates = ConnectorRates()
        self._lock = threading.Lock()
        self._at = 0.0
        self._snapshot: dict[str, Any] = {}

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            if time.monotonic() - self._at >= TICK_S * 0.9:
                entries, now = fleet_entries(self.gateway)
                self._snapshot = {"entries": {e["id"]: e for e in entries}, "data_now": now,
                                  "connectors": self.rates.strip(self.gateway)}
                self._at = time.monotonic()
            return self._snapshot


async def event_stream(gateway: "Gateway", watch: FleetWatch, principal: Principal,
                       for_caller: Callable[[Any, Principal], Any]) -> AsyncIterator[str]:
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[WorkOrderEvent] = asyncio.Queue(QUEUE_EVENTS)

    def visible(device_id: str) -> bool:
        asset = gateway.assets.get(device_id)
        return asset is not None and principal.may_see_site(asset.site.id)

    def enqueue(event: WorkOrderEvent) -> None:
        if queue.full():  # a stalled browser loses the oldest events, never blocks ticketing
            queue.get_nowait()
        queue.put_nowait(event)

    def on_event(event: WorkOrderEvent) -> None:  # ticketing's thread
        if visible(event.device_id):
            loop.call_soon_threadsafe(enqueue, event)

    gateway.events.subscribe(on_event)
    seen: dict[str, tuple[Any, ...]] = {}
    try:
        next_tick = 0.0
        while not (gateway.api_server is not None and gateway.api_server.should_exit):
            wait = next_tick - loop.time()
            if wait <= 0:
                yield sse("tick", await asyncio.to_thread(_tick, watch, seen, visible))
                next_tick = loop.time() + TICK_S
                continue
            try:
                event = await asyncio.wait_for(queue.get(), timeout=min(wait, 1.0))
            except asyncio.TimeoutError:
                continue
            yield sse("work_order", for_caller({"work_order_code": event.work_order_code, "device_id": event.device_id,
                                                "kind": event.kind, "at": event.at, "actor": event.actor}, principal))
    finally:
        gateway.events.unsubscribe(on_event)


def _tick(watch: FleetWatch, seen: dict[str, tuple[Any, ...]], visible: Any) -> dict[str, Any]:
    """What changed since this stream's last tick: last-reading times, and devices whose health did."""
    snapshot = watch.snapshot()
    last_seen: dict[str, float] = {}
    changed = []
    for device, entry in snapshot["entries"].items():
        if not visible(device):
            continue
        health = (entry["health"], entry["open_priority"], entry["operating_state"])
        before = seen.get(device)
        if before is not None and before[1:] != health:
            changed.append(device)
        if entry["last_reading_at"] is not None and (before is None or before[0] != entry["last_reading_at"]):
            last_seen[device] = entry["last_reading_at"]
        seen[device] = (entry["last_reading_at"], *health)
    return {"server_now": time.time(), "data_now": snapshot["data_now"], "connectors": snapshot["connectors"],
            "last_seen": last_seen, "health_changed": changed}
