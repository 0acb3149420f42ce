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
