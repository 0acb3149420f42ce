"""The one interface every connector implements."""

from __future__ import annotations

from typing import Any, Protocol

from gateway.core import AlarmSink, ReadingSink


class Connector(Protocol):
    """A source of readings and device alarms.

    ``run`` owns the connection for the connector's whole life: it connects,
    reconnects after failures, pushes batches of readings into ``readings`` and
    device alarms into ``alarms``, and returns only when cancelled.
    """

    name: str

    async def run(self, readings: ReadingSink, alarms: AlarmSink) -> None: ...

    def diagnostics(self) -> dict[str, Any]: ...
