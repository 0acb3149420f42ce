"""The gateway as the coordinator sees it: its units, their devices, and starting and stopping them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gateway.cluster.assign import Unit, unit_devices, unit_source, units_of

if TYPE_CHECKING:
    from gateway.app import Gateway


class GatewayHost:
    def __init__(self, gateway: "Gateway") -> None:
        self.gateway = gateway
        self._running: dict[str, str] = {}  # unit id -> the name of its connector

    @property
    def _partitions(self) -> int:
        assert self.gateway.config.cluster is not None
        return self.gateway.config.cluster.partitions

    def units(self) -> list[Unit]:
        return units_of(self.gateway.config.sources, self._partitions)

    def _source(self, unit: Unit) -> Any | None:
        return next((s for s in self.gateway.config.sources if s.name == unit.source), None)

    def unit_devices(self, unit: Unit) -> list[str]:
        if self._source(unit) is None:  # the source was removed from the configuration
            return []
        return unit_devices(unit, self.gateway.config.sources, sorted(self.gateway.assets), self._partitions)

    def unit_source(self, unit: Unit) -> Any | None:
        source = self._source(unit)
        if source is None:
            return None
        devices = self.unit_devices(unit)
        if unit.partition is not None and not devices:
            return None  # a partition no device hashes to (yet)
        return unit_source(unit, source, devices)

    async def start_unit(self, unit: Unit, source: Any) -> None:
        self._running[unit.id] = source.name
        await self.gateway.start_source(source)

    async def stop_unit(self, unit: Unit) -> None:
        name = self._running.pop(unit.id, None)
        if name is not None:
            await self.gateway.stop_source(name)
