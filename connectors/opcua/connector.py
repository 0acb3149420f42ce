"""The OPC UA connector: one session per source (the hub), its diagnostics."""

from __future__ import annotations

from typing import Any

from connectors.base import check_devices
from connectors.opcua import const
from connectors.opcua.hub import OpcUaHub
from connectors.opcua.schema import OpcUaSourceConfig
from gateway.core import AlarmSink, ReadingSink, SeriesInfo


class OpcUaConnector:
    def __init__(self, config: OpcUaSourceConfig, known_devices: set[str]) -> None:
        check_devices(config.name, [d.device for d in config.devices], known_devices)
        self.config = config
        self.name = config.name
        self.hub = OpcUaHub(config)

    async def run(self, readings: ReadingSink, alarms: AlarmSink) -> None:
        await self.hub.run(readings, alarms)

    def series(self) -> dict[tuple[str, str], SeriesInfo]:
        """Units from the config; each variable's data type as its values arrive (``UInt32``, ``Double``…)."""
        return {(device.device, node.metric): SeriesInfo(node.unit, self.hub.data_types.get((device.device, node.metric), ""))
                for device in self.config.devices for node in device.nodes}

    def diagnostics(self) -> dict[str, Any]:
        hub = self.hub
        return {
            "type": const.CONNECTOR_TYPE,
            "name": self.name,
            "endpoint": self.config.url,
            "security": self.config.security.mode,
            "mode": self.config.mode,
            "connected": hub.connected,
            "last_connection_error": hub.last_connection_error,
            "last_message_at": hub.last_reading_at,
            "readings": hub.readings,
            "alarms": hub.alarms,
            "reconnects": hub.reconnects,
            "monitored_items": hub.monitored_items,
            "events_subscribed": hub.events_subscribed,
            "server_limits": hub.server_limits,
            "service_calls": dict(hub.service_calls),
            "errors": dict(hub.errors),
            "node_errors": dict(hub.node_errors),
            "unmatched_event_sources": dict(hub.unmatched_event_sources),
            "offline_devices": sorted(hub.tracker.offline),
        }
