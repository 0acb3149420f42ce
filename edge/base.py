"""The one interface every telemetry sink implements, and the reader the API uses."""

from __future__ import annotations

from typing import Any, Protocol

from gateway.core import Reading


class TransientWriteError(Exception):
    """Trying again later may work: server down, 5xx, timeout."""


class UnreachableError(TransientWriteError):
    """No answer at all (connection refused, timeout): the server is down or the network is."""


class RejectedWriteError(Exception):
    """The server refused the data itself (a malformed line, a type conflict): never retry it unchanged."""


class Sink(Protocol):
    """Stores batches of readings.

    ``write`` is blocking and is called from a worker thread, one batch at a
    time, in arrival order; it returns once the batch is durable.
    """

    name: str

    def write(self, readings: list[Reading]) -> None: ...

    def close(self) -> None: ...

    def diagnostics(self) -> dict[str, Any]: ...


class HistoryReader(Protocol):
    """History windows for the API and dashboards (the embedded store, or InfluxDB through InfluxQL)."""

    def history(
        self, device_id: str, metric: str | None, since: float, until: float, limit: int
    ) -> list[Reading]: ...
