"""The one interface every connector implements."""

from __future__ import annotations

import asyncio
import time
from typing import Any, Protocol

from gateway.core import AlarmSink, ReadingSink, SeriesInfo


class Connector(Protocol):
    """A source of readings and device alarms.

    ``run`` owns the connection for the connector's whole life: it connects,
    reconnects after failures, pushes batches of readings into ``readings`` and
    device alarms into ``alarms``, and returns only when cancelled.
    """

    name: str

    async def run(self, readings: ReadingSink, alarms: AlarmSink) -> None: ...

    def diagnostics(self) -> dict[str, Any]: ...

    def series(self) -> dict[tuple[str, str], SeriesInfo]:
        """(device, metric) -> unit and source data type, as far as configured or learnt so far."""
        ...


def check_devices(source: str, devices: list[str], known_devices: set[str]) -> None:
    """Refuse a source that names devices which are not configured assets."""
    unknown = sorted(device for device in devices if device not in known_devices)
    if unknown:
        raise ValueError(f"source {source!r}: device(s) {', '.join(unknown)} are not configured assets")


def listed_twice(names: list[str]) -> list[str]:
    """Names that occur more than once, sorted.

    >>> listed_twice(["a", "b", "a"])
    ['a']
    """
    return sorted({name for name in names if names.count(name) > 1})


def worth_logging(count: int, first: int = 5, every: int = 1000) -> bool:
    """Log the first few of a kind of error, then one in every ``every``: counted always, logged sparingly.

    >>> [n for n in range(1, 3001) if worth_logging(n)]
    [1, 2, 3, 4, 5, 1000, 2000, 3000]
    """
    return count <= first or count % every == 0


def connection_failure(reason: str) -> dict[str, Any]:
    """What a connector's diagnostics show as ``last_connection_error``: when, and why in words."""
    return {"at": time.time(), "reason": reason}


async def stop_tasks(tasks: list[asyncio.Task[Any]], again_after_s: float = 0.2) -> None:
    """Cancel the tasks and wait until every one has stopped, cancelling again those still running.

    Once is not enough on Python 3.11: ``asyncio.wait_for`` (which pymodbus and asyncua await every
    request with) drops a cancellation that arrives just as its answer does (fixed in 3.12), and a
    device task polling flat out would then poll on for ever while its connector waits for it.
    """
    pending = {task for task in tasks if not task.done()}
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=again_after_s)
