"""The Modbus TCP connector: one hub per device, plus the 'device offline' watchdog.

A device is offline after ``offline_after_intervals`` failed polls in a row (see
:mod:`connectors.modbus.hub`), and back online at its first answered poll.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

from connectors.base import check_devices, stop_tasks
from connectors.modbus import const
from connectors.modbus.hub import DeviceHub
from connectors.modbus.schema import ModbusSourceConfig
from gateway.core import DEVICE_OFFLINE_CODE, Alarm, AlarmSink, ReadingSink, SeriesInfo, Severity

WATCHDOG_INTERVAL_S = 0.5


class ModbusConnector:
    def __init__(self, config: ModbusSourceConfig, known_devices: set[str]) -> None:
        check_devices(config.name, [d.device for d in config.devices], known_devices)
        self.config = config
        self.name = config.name
        self.hubs = [DeviceHub(config, device) for device in config.devices]
        self.offline: set[str] = set()
        self.alarms = 0

    async def run(self, readings: ReadingSink, alarms: AlarmSink) -> None:
        async def put_alarm(alarm: Alarm) -> None:
            self.alarms += 1
            await alarms.put_alarm(alarm)

        tasks = [asyncio.create_task(hub.run(readings.put, put_alarm), name=f"modbus-{hub.device_id}")
                 for hub in self.hubs]
        try:
            while True:
                await asyncio.sleep(WATCHDOG_INTERVAL_S)
                for alarm in self.offline_edges(time.time()):
                    await put_alarm(alarm)
                for task in tasks:
                    if task.done() and not task.cancelled() and task.exception() is not None:
                        raise task.exception()  # type: ignore[misc]
        finally:
            await stop_tasks(tasks)

    def offline_edges(self, now: float) -> list[Alarm]:
        """'Device offline' alarms of devices that just failed enough polls in a row, and clears of
        those that answered again."""
        edges = []
        limit = self.config.offline_after_intervals
        for hub in self.hubs:
            missed = hub.missed_polls(now)
            if hub.device_id not in self.offline and missed >= limit:
                self.offline.add(hub.device_id)
                why = hub.last_failure if hub.down_since is None else "not connected"
                edges.append(Alarm(hub.device_id, now, DEVICE_OFFLINE_CODE, Severity.MEDIUM,
                                   f"{missed} polls in a row failed ({why or 'no answer'}; source {self.name})",
                                   active=True, source=self.name))
            elif hub.device_id in self.offline and missed == 0:
                self.offline.discard(hub.device_id)
                edges.append(Alarm(hub.device_id, now, DEVICE_OFFLINE_CODE, Severity.MEDIUM,
                                   f"device back online (source {self.name})", active=False, source=self.name))
        return edges

    def series(self) -> dict[tuple[str, str], SeriesInfo]:
        """From the register map: each metric's unit and register type (``uint32``, ``int16``, ``bool``…)."""
        return {(device.device, register.metric): SeriesInfo(register.unit, register.type or "")
                for device in self.config.devices for register in device.registers}

    def diagnostics(self) -> dict[str, Any]:
        devices = [hub.diagnostics() for hub in self.hubs]
        errors: Counter[str] = Counter()
        for device in devices:
            errors.update(device["errors"])
        last = [d["last_reading_at"] for d in devices if d["last_reading_at"] is not None]
        offline = sorted(self.offline)
        return {
            "type": const.CONNECTOR_TYPE,
            "name": self.name,
            # Connected while any device is: one dead device shows under 'devices' and 'offline_devices'.
            "connected": any(d["connected"] for d in devices),
            "last_connection_error": max((d["last_connection_error"] for d in devices if d["last_connection_error"]),
                                         key=lambda failure: failure["at"], default=None),
            "last_message_at": max(last, default=None),
            "readings": sum(d["readings"] for d in devices),
            "alarms": self.alarms,
            "reconnects": sum(d["reconnects"] for d in devices),
            "errors": dict(errors),
            "offline_devices": offline,
            "devices": devices,
        }
