"""The internal event bus: ticketing publishes, the API (and later webhooks, MQTT) consume."""

from __future__ import annotations

import logging
import threading
from collections import deque
from typing import Any, Callable

from gateway.core import WorkOrderEvent

log = logging.getLogger(__name__)


class EventBus:
    """Synchronous fan-out to subscribers, plus the most recent events for the API.

    ``publish`` may be called from any thread; a failing subscriber is logged
    and never stops the others or the publisher.
    """

    def __init__(self, keep: int = 1000) -> None:
        self.recent: deque[WorkOrderEvent] = deque(maxlen=keep)
        self._subscribers: list[Callable[[WorkOrderEvent], None]] = []
        self._lock = threading.Lock()
        self.published = 0

    def subscribe(self, callback: Callable[[WorkOrderEvent], None]) -> None:
        with self._lock:
            self._subscribers.append(callback)

    def unsubscribe(self, callback: Callable[[WorkOrderEvent], None]) -> None:
        with self._lock:
            if callback in self._subscribers:
                self._subscribers.remove(callback)

    def publish(self, event: WorkOrderEvent) -> None:
        self.recent.append(event)
        self.published += 1
        with self._lock:
            subscribers = list(self._subscribers)
        for callback in subscribers:
            try:
                callback(event)
            except Exception:
                log.exception("event subscriber %r failed on %s", callback, event.kind)

    def latest(self, limit: int) -> list[dict[str, Any]]:
        events = list(self.recent)[-limit:]
        return [
            {"work_order_code": e.work_order_code, "device_id": e.device_id, "kind": e.kind, "at": e.at, "actor": e.actor, "data": e.data}
            for e in reversed(events)
        ]
