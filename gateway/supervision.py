"""Keep long-running tasks (connectors) alive: a task that fails or ends by itself is restarted.

A connector's ``run`` is meant to return only when cancelled; if it raises or
returns, the gateway would otherwise lose that source silently. The supervisor
logs it, counts it, waits a capped backoff and starts it again; ``/health``
shows the restarts and the last error.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

from connectors.backoff import Backoff

log = logging.getLogger(__name__)

# A restart stays a /health problem this long after it happened.
RECENT_RESTART_S = 600.0


@dataclass
class TaskHealth:
    name: str
    restarts: int = 0
    last_error: str | None = None
    last_restart_at: float | None = None

    def diagnostics(self) -> dict[str, Any]:
        return {"restarts": self.restarts, "last_error": self.last_error, "last_restart_at": self.last_restart_at}

    def problem(self, now: float) -> str | None:
        if self.last_restart_at is None or now - self.last_restart_at > RECENT_RESTART_S:
            return None
        return f"{self.name} was restarted {self.restarts} time(s), last after: {self.last_error}"


async def supervise(
    health: TaskHealth,
    start: Callable[[], Awaitable[None]],
    backoff: Backoff | None = None,
) -> None:
    """Run ``start()`` until cancelled, restarting it whenever it raises or returns."""
    backoff = backoff or Backoff(0.5, 30.0)
    while True:
        started = time.monotonic()
        try:
            await start()
            why = "it ended by itself"
        except asyncio.CancelledError:
            raise
        except Exception as error:  # noqa: BLE001 - whatever it was, the source must come back
            why = f"{type(error).__name__}: {str(error)[:300]}"
            log.error("%s failed; restarting it", health.name, exc_info=error)
        else:
            log.error("%s %s; restarting it", health.name, why)
        if time.monotonic() - started > 60:
            backoff.reset()  # it ran fine for a while: this is a new failure, not a crash loop
        health.restarts += 1
        health.last_error = why
        health.last_restart_at = time.time()
        await asyncio.sleep(backoff.next_delay())
