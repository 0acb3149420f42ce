"""The Modbus TCP connector: one hub per device, plus the 'device offline' watchdog."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

from connectors.base import check_devices
from connectors.liveness import OfflineTracker
from connectors.modbus import const
from connectors.modbus.hub import DeviceHub
from connectors.modbus.schema import ModbusSourceConfig
from gateway.core import Alarm, AlarmSink, Reading, ReadingSink

WATCHDOG_INTERVAL_S = 0.5


class ModbusConnector:
    def __init__(self, config: ModbusSourceConfig, known_devices: set[str]) -> None:
        check_devices(config.name, [d.device for d in config.devices], known_devices)
        self.config = config
        self.name = config.name
        self.hubs = [DeviceHub(config, device) for device in config.devices]
        self.trackers = {
            hub.device_id: OfflineTracker(config.offline_after_intervals * hub.shortest_interval_s, config.name)
            for hub in self.hubs
        }
        self.alarms = 0

    async def run(self, readings: ReadingSink, alarms: AlarmSink) -> None:
        async def put_alarm(alarm: Alarm) -> None:
            self.alarms += 1
            await alarms.put_alarm(alarm)

        def readings_of(hub: DeviceHub) -> Any:
            tracker = self.trackers[hub.device_id]

            async def put(batch: list[Reading]) -> None:
                back = tracker.seen(hub.device_id, time.time())
                await readings.put(batch)
                if back is not None:
                    await put_alarm(back)

            return put

        now = time.time()
        for device_id, tracker in self.trackers.items():
            tracker.expect(device_id, now)
        tasks = [asyncio.create_task(hub.run(readings_of(hub), put_alarm), name=f"modbus-{hub.device_id}")
                 for hub in self.hubs]
        try:
            while True:
                await asyncio.sleep(WATCHDOG_INTERVAL_S)
                for tracker in self.trackers.values():
                    for alarm in tracker.overdue(time.time()):
                        await put_alarm(alarm)
                for task in tasks:
                    if task.done() and not task.cancelled() and task.exception() is not None:
                        raise task.exception()  # type: ignore[misc]
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def diagnostics(self) -> dict[str, Any]:
        devices = [hub.diagnostics() for hub in self.hubs]
        errors: Counter[str] = Counter()
        for device in devices:
            errors.update(device["errors"])
        last = [d["last_reading_at"] for d in devices if d["last_reading_at"] is not None]
        offline = sorted(device for tracker in self.trackers.values() for device in tracker.offline)
        return {
            "type": const.CONNECTOR_TYPE,
            "name": self.name,
            # Connected while any device is: one dead device shows under 'devices' and 'offline_devices'.
            "connected": any(d["connected"] for d in devices),
            "last_message_at": max(last, default=None),
            "readings": sum(d["readings"] for d in devices),
            "alarms": self.alarms,
            "reconnects": sum(d["reconnects"] for d in devices),
            "errors": dict(errors),
            "offline_devices": offline,
            "devices": devices,
        }
