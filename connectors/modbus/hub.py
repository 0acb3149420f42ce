"""The Modbus hub of one device: owns its TCP connection, polls its groups, decodes, reconnects.

Every device has its own connection and task, so a dead or slow device only
ever delays itself. Reads are planned once (:mod:`connectors.modbus.plan`); a
request the device refuses with an exception is split into one request per
point, so the refused point is named and the others keep flowing.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import Counter
from typing import Any, Awaitable, Callable

from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException

from connectors.backoff import Backoff
from connectors.base import worth_logging
from connectors.modbus import const
from connectors.modbus.codec import DecodeError, decode_registers, scaled
from connectors.modbus.plan import Block, plan_reads, split
from connectors.modbus.schema import (
    AlarmBitConfig, InfoConfig, ModbusDeviceConfig, ModbusSourceConfig, RegisterConfig, _Point,
)
from gateway.core import Alarm, Quality, Reading

log = logging.getLogger(__name__)

ReadingsOut = Callable[[list[Reading]], Awaitable[None]]
AlarmOut = Callable[[Alarm], Awaitable[None]]


class DeviceError(Exception):
    """A read failed in a way that says nothing about the other points (kind, message)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def describe(point: _Point, address_base: int) -> str:
    label = getattr(point, "metric", None) or getattr(point, "name", None) or getattr(point, "code", "")
    bit = f".{point.bit}" if point.bit is not None else ""
    return f"{point.table}[{point.address}{bit}] {label!r} ({point.type}, {'1' if address_base else '0'}-based)"


class DeviceHub:
    def __init__(self, source: ModbusSourceConfig, device: ModbusDeviceConfig) -> None:
        self.source = source
        self.device = device
        self.device_id = device.device
        self.host = device.host or source.host
        self.port = device.port or source.port
        self.blocks: dict[str, list[Block]] = {}
        for block in plan_reads([*device.registers, *device.alarms], source.address_base,
                                source.max_registers_per_read, source.max_gap):
            self.blocks.setdefault(block.group, []).append(block)
        self.info_blocks = plan_reads(device.info, source.address_base, source.max_registers_per_read, 0)
        self.intervals = {group: source.group_interval(group) for group in self.blocks}
        self.connected = False
        self.ever_connected = False
        self.reconnects = 0
        self.readings = 0
        self.requests = 0
        self.last_reading_at: float | None = None
        self.errors: Counter[str] = Counter()
        # The last problem of each point, in words; cleared when the point reads again.
        self.point_errors: dict[str, str] = {}
        self.attributes: dict[str, Any] = {}
        self._alarm_active: dict[tuple[str, int, int | None, str], bool] = {}
        self._client: AsyncModbusTcpClient | None = None

    @property
    def shortest_interval_s(self) -> float:
        return min(self.intervals.values(), default=self.source.interval_s)

    # -- connection ----------------------------------------------------------------------

    async def run(self, put_readings: ReadingsOut, put_alarm: AlarmOut) -> None:
        backoff = Backoff(self.source.reconnect_min_s, self.source.reconnect_max_s)
        try:
            while True:
                try:
                    await self._connect()
                    backoff.reset()
                    await self._read_info()
                    await self._poll_forever(put_readings, put_alarm)
                except (ConnectionException, OSError) as error:
                    self._count(const.ERR_CONNECT, f"{self.device_id} at {self.host}:{self.port}: {error}")
                self._close()
                await asyncio.sleep(backoff.next_delay())
        finally:
            self._close()

    async def _connect(self) -> None:
        client = AsyncModbusTcpClient(
            self.host, port=self.port, timeout=self.source.timeout_s, retries=self.source.retries,
            reconnect_delay=0,  # our loop reconnects, with backoff and jitter
            name=f"modbus-{self.device_id}",
        )
        self._client = client
        if not await client.connect():
            raise ConnectionException(f"cannot connect to {self.host}:{self.port}")
        if self.ever_connected:
            self.reconnects += 1
        self.ever_connected = True
        self.connected = True
        log.info("modbus %s: connected to %s:%s (unit %d)", self.device_id, self.host, self.port, self.device.unit_id)

    def _close(self) -> None:
        self.connected = False
        if self._client is not None:
            self._client.close()
            self._client = None

    # -- polling -------------------------------------------------------------------------

    async def _poll_forever(self, put_readings: ReadingsOut, put_alarm: AlarmOut) -> None:
        loop = asyncio.get_running_loop()
        due = {group: loop.time() for group in self.blocks}
        while True:
            group = min(due, key=due.__getitem__)
            delay = due[group] - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            # A poll that overran its interval skips the missed ticks instead of bursting.
            due[group] = max(due[group] + self.intervals[group], loop.time())
            readings, alarms = await self.poll_group(group)
            if readings:
                await put_readings(readings)
            for alarm in alarms:
                await put_alarm(alarm)

    async def poll_group(self, group: str) -> tuple[list[Reading], list[Alarm]]:
        """Read every block of a poll group once; readings and alarm edges of what could be read."""
        readings: list[Reading] = []
        alarms: list[Alarm] = []
        blocks = self.blocks[group]
        index = 0
        while index < len(blocks):
            block = blocks[index]
            try:
                values = await self._read(block)
            except DeviceError as error:
                if len(block.points) > 1:
                    # Isolate the point(s) the device refuses: from now on, one request each.
                    blocks[index:index + 1] = split(block, self.source.address_base)
                    log.info("modbus %s: %s refused (%s); reading its %d points one by one",
                             self.device_id, f"{block.table}[{block.start}+{block.count}]", error, len(block.points))
                    continue
                self._point_failed(block.points[0], error)
                index += 1
                continue
            now = time.time()
            for point in block.points:
                self._decode_point(block, point, values, now, readings, alarms)
            index += 1
        if readings:
            self.readings += len(readings)
            self.last_reading_at = readings[-1].timestamp
        return readings, alarms

    async def _read(self, block: Block) -> list[int] | list[bool]:
        client = self._client
        if client is None or not client.connected:
            raise ConnectionException("not connected")
        read = {
            "holding": client.read_holding_registers,
            "input": client.read_input_registers,
            "coil": client.read_coils,
            "discrete": client.read_discrete_inputs,
        }[block.table]
        self.requests += 1
        try:
            response = await read(block.start, count=block.count, device_id=self.device.unit_id)
        except ModbusIOException as error:
            if not client.connected:
                raise ConnectionException(str(error)) from None
            self._count(const.ERR_TIMEOUT, f"{self.device_id}: no answer from unit {self.device.unit_id} "
                                           f"to {block.table}[{block.start}+{block.count}] within "
                                           f"{self.source.timeout_s}s x {self.source.retries + 1} tries")
            raise DeviceError(const.ERR_TIMEOUT, "timeout") from None
        except ModbusException as error:
            raise ConnectionException(str(error)) from None
        if response.isError():
            code = getattr(response, "exception_code", 0)
            name = const.EXCEPTION_NAMES.get(code, f"exception_{code}")
            raise DeviceError(f"exception:{name}", f"{name} (Modbus exception {code})")
        if block.table in const.BIT_TABLES:
            return list(response.bits[: block.count])
        return list(response.registers)

    def _decode_point(
        self, block: Block, point: _Point, values: list[Any], now: float,
        readings: list[Reading], alarms: list[Alarm],
    ) -> None:
        offset = block.offset_of(point, self.source.address_base)
        raw_values = values[offset: offset + point.width]
        label = describe(point, self.source.address_base)
        try:
            if block.table in const.BIT_TABLES:
                raw: int | float | str = int(bool(raw_values[0]))
            else:
                raw = decode_registers(raw_values, point.type, point.byte_order, point.bit)
        except (DecodeError, IndexError) as error:
            self._point_failed(point, DeviceError(const.ERR_DECODE, f"cannot decode: {error}"))
            return
        self.point_errors.pop(label, None)
        if isinstance(point, RegisterConfig):
            value = scaled(raw, point.scale, point.offset)  # type: ignore[arg-type]
            quality = Quality.GOOD if math.isfinite(value) else Quality.BAD
            readings.append(Reading(self.device_id, point.metric, value, now, quality, self.source.name))
        elif isinstance(point, AlarmBitConfig):
            alarm = self._alarm_edge(point, int(raw) == point.active_when, now)  # type: ignore[arg-type]
            if alarm is not None:
                alarms.append(alarm)

    def _alarm_edge(self, point: AlarmBitConfig, active: bool, now: float) -> Alarm | None:
        key = (point.table, point.address, point.bit, point.code)
        previous = self._alarm_active.get(key)
        self._alarm_active[key] = active
        if previous == active or (previous is None and not active):
            return None
        message = point.message or f"{point.code} bit {describe(point, self.source.address_base)}"
        return Alarm(self.device_id, now, point.code, point.severity,
                     message if active else f"{message}: cleared", active=active, source=self.source.name)

    async def _read_info(self) -> None:
        for block in self.info_blocks:
            try:
                values = await self._read(block)
            except DeviceError as error:
                for point in block.points:
                    self._point_failed(point, error)
                continue
            for point in block.points:
                assert isinstance(point, InfoConfig)
                offset = block.offset_of(point, self.source.address_base)
                try:
                    self.attributes[point.name] = decode_registers(
                        values[offset: offset + point.width], point.type, point.byte_order, point.bit)
                except DecodeError as error:
                    self._point_failed(point, DeviceError(const.ERR_DECODE, str(error)))

    # -- bookkeeping ---------------------------------------------------------------------

    def _point_failed(self, point: _Point, error: DeviceError) -> None:
        label = describe(point, self.source.address_base)
        message = f"{self.device_id} {label}: {error}"
        if error.kind != const.ERR_TIMEOUT:  # timeouts are counted once per request
            self._count(error.kind, message)
        self.point_errors[label] = str(error)

    def _count(self, kind: str, message: str) -> None:
        self.errors[kind] += 1
        count = self.errors[kind]
        if worth_logging(count):
            log.warning("modbus %s: %s (%s, %d so far)", self.source.name, message, kind, count)

    def diagnostics(self) -> dict[str, Any]:
        return {
            "device": self.device_id,
            "endpoint": f"{self.host}:{self.port}",
            "unit_id": self.device.unit_id,
            "connected": self.connected,
            "reconnects": self.reconnects,
            "last_reading_at": self.last_reading_at,
            "readings": self.readings,
            "requests": self.requests,
            "read_plan": {group: len(blocks) for group, blocks in self.blocks.items()},
            "errors": dict(self.errors),
            "point_errors": dict(self.point_errors),
            "attributes": self.attributes,
        }
