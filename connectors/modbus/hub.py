"""The Modbus hub of one device: owns its TCP connection, polls its groups, decodes, reconnects.

Every device has its own connection and task, so a dead or slow device only
ever delays itself. Reads are planned once (:mod:`connectors.modbus.plan`). A
request the device refuses as illegal (address, function, value) is split into
one request per register range to find the refused range; from then on that
range is read alone and the rest coalesced around it again. Timeouts and a busy
device say nothing about which point is wrong: they never change the plan. A
reconnect starts from the full plan again (the device may have been updated).

Readings carry the time the request was sent, not when the answer came: a slow
device's values are stamped when they were asked for.

The device is offline after ``offline_after_intervals`` failed polls in a row:
polls that got no answer at all, and polls that were due while the connection
was down. A slow device that answers every poll is never offline.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import Counter, deque
from typing import Any, Awaitable, Callable

from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException

from connectors.backoff import Backoff
from connectors.base import connection_failure, worth_logging
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


# Refusals that are about the request itself: the same request will be refused again.
PERMANENT_REFUSALS = frozenset({"exception:illegal_function", "exception:illegal_address", "exception:illegal_value"})
RATE_WINDOW = 20  # polls the achieved rate of a group is measured over


class DeviceError(Exception):
    """A read failed in a way that says nothing about the other points (kind, message)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind

    @property
    def permanent(self) -> bool:
        return self.kind in PERMANENT_REFUSALS


def describe(point: _Point, address_base: int) -> str:
    label = getattr(point, "metric", None) or getattr(point, "name", None) or getattr(point, "code", "")
    bit = "" if point.bit is None else f".{point.bit}" if point.bit_length == 1 else \
        f".{point.bit}-{point.bit + point.bit_length - 1}"
    return f"{point.table}[{point.address}{bit}] {label!r} ({point.type}, {'1' if address_base else '0'}-based)"


class DeviceHub:
    def __init__(self, source: ModbusSourceConfig, device: ModbusDeviceConfig) -> None:
        self.source = source
        self.device = device
        self.device_id = device.device
        self.host = device.host or source.host
        self.port = device.port or source.port
        self.points: dict[str, list[_Point]] = {}
        for point in (*device.registers, *device.alarms):
            self.points.setdefault(point.group, []).append(point)
        # Points whose register range the device refuses (by id: the config's objects live as long as we do).
        self.refused: dict[str, set[int]] = {group: set() for group in self.points}
        self.blocks = {group: self._plan(group) for group in self.points}
        self.info_blocks = plan_reads(device.info, source.address_base, source.max_registers_per_read, 0)
        self.intervals = {group: source.group_interval(group) for group in self.blocks}
        # Per poll group: polls made, polls that overran their interval, ticks skipped, recent poll times.
        self.polls: Counter[str] = Counter()
        self.overruns: Counter[str] = Counter()
        self.skipped_ticks: Counter[str] = Counter()
        self._poll_times = {group: deque(maxlen=RATE_WINDOW) for group in self.blocks}
        # Failed polls in a row, and since when the connection is down (None: connected).
        self.failed_polls = 0
        self.down_since: float | None = time.time()
        self.last_failure = ""
        self.last_connection_error: dict[str, Any] | None = None
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

    def _plan(self, group: str) -> list[Block]:
        """The group's requests: refused ranges alone, the other points coalesced around them."""
        base = self.source.address_base
        refused = [p for p in self.points[group] if id(p) in self.refused[group]]
        avoid = [(p.table, p.address - base, p.address - base + p.width) for p in refused]
        readable = [p for p in self.points[group] if id(p) not in self.refused[group]]
        tables = sorted({point.table for point in refused})
        alone = [piece for table in tables for piece in split(
            Block(group, table, 0, 0, tuple(p for p in refused if p.table == table)), base)]
        coalesced = plan_reads(readable, base, self.source.max_registers_per_read, self.source.max_gap, avoid)
        return sorted([*coalesced, *alone], key=lambda block: (block.table, block.start))

    def missed_polls(self, now: float) -> int:
        """Failed polls in a row, counting every poll that was due while the connection was down."""
        if self.down_since is None:
            return self.failed_polls
        return self.failed_polls + int((now - self.down_since) / self.shortest_interval_s)

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
                    self.last_connection_error = connection_failure(f"{self.host}:{self.port}: {error}")
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
        self.failed_polls = self.missed_polls(time.time())
        self.down_since = None
        if any(self.refused.values()):  # the device may have been reconfigured: try the full plan again
            self.refused = {group: set() for group in self.points}
            self.blocks = {group: self._plan(group) for group in self.points}
        log.info("modbus %s: connected to %s:%s (unit %d)", self.device_id, self.host, self.port, self.device.unit_id)

    def _close(self) -> None:
        if self.connected:
            self.down_since = time.time()
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
            scheduled = due[group]
            readings, alarms = await self.poll_group(group)
            finished = loop.time()
            self._account(group, scheduled, finished)
            # A poll that overran its interval skips the missed ticks instead of bursting.
            due[group] = max(scheduled + self.intervals[group], finished)
            if readings:
                await put_readings(readings)
            for alarm in alarms:
                await put_alarm(alarm)

    def _account(self, group: str, scheduled: float, finished: float) -> None:
        """Count the poll; an overrun (finished after the next tick) with the ticks it skipped."""
        interval = self.intervals[group]
        self.polls[group] += 1
        self._poll_times[group].append(scheduled)
        late = finished - (scheduled + interval)
        if late > 0:
            skipped = int(late // interval) + 1
            self.overruns[group] += 1
            self.skipped_ticks[group] += skipped
            if worth_logging(self.overruns[group]):
                log.warning("modbus %s: poll group %r of %s took %.2f s for a %.2f s interval (%d overruns, "
                            "%d ticks skipped so far; achieved %.2f polls/s)", self.source.name, group,
                            self.device_id, finished - scheduled, interval, self.overruns[group],
                            self.skipped_ticks[group], self.achieved_rate(group) or 0.0)

    def achieved_rate(self, group: str) -> float | None:
        """Polls per second over the group's last polls (None before two)."""
        times = self._poll_times[group]
        if len(times) < 2 or times[-1] <= times[0]:
            return None
        return (len(times) - 1) / (times[-1] - times[0])

    async def poll_group(self, group: str) -> tuple[list[Reading], list[Alarm]]:
        """Read every block of a poll group once; readings and alarm edges of what could be read."""
        readings: list[Reading] = []
        alarms: list[Alarm] = []
        answered = False
        for block in list(self.blocks[group]):
            answered |= await self._read_block(block, readings, alarms)
        if answered:
            self.failed_polls = 0
        else:
            self.failed_polls += 1
        if readings:
            self.readings += len(readings)
            self.last_reading_at = readings[-1].timestamp
        return readings, alarms

    async def _read_block(self, block: Block, readings: list[Reading], alarms: list[Alarm]) -> bool:
        """Read one request into ``readings`` and ``alarms``; whether the device answered any of it."""
        asked_at = time.time()
        try:
            values = await self._read(block)
        except DeviceError as error:
            self.last_failure = str(error)
            pieces = split(block, self.source.address_base)
            if error.permanent and len(pieces) > 1:
                # Find the range(s) it refuses, read the rest coalesced around them from now on.
                log.info("modbus %s: %s refused (%s); isolating the refused range", self.device_id,
                         f"{block.table}[{block.start}+{block.count}]", error)
                answered = False
                for piece in pieces:
                    answered |= await self._read_block(piece, readings, alarms)
                self.blocks[block.group] = self._plan(block.group)
                return answered
            for point in block.points:
                self._point_failed(point, error)
            if error.permanent:
                self.refused[block.group].update(id(point) for point in block.points)
            return False
        for point in block.points:
            self._decode_point(block, point, values, asked_at, readings, alarms)
        return True

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
        try:
            if block.table in const.BIT_TABLES:
                raw: int | float | str = int(bool(raw_values[0]))
            else:
                raw = decode_registers(raw_values, point.type, point.byte_order, point.bit, point.bit_length)
        except (DecodeError, IndexError) as error:
            self._point_failed(point, DeviceError(const.ERR_DECODE, f"cannot decode: {error}"))
            return
        if self.point_errors:  # a read that works again clears the point's old error (its label made only then)
            self.point_errors.pop(describe(point, self.source.address_base), None)
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
                        values[offset: offset + point.width], point.type, point.byte_order, point.bit,
                        point.bit_length)
                except DecodeError as error:
                    self._point_failed(point, DeviceError(const.ERR_DECODE, str(error)))
                else:
                    self.point_errors.pop(describe(point, self.source.address_base), None)

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
            "last_connection_error": self.last_connection_error,
            "reconnects": self.reconnects,
            "last_reading_at": self.last_reading_at,
            "readings": self.readings,
            "requests": self.requests,
            "read_plan": {group: len(blocks) for group, blocks in self.blocks.items()},
            "refused_points": sorted(describe(p, self.source.address_base) for group, points in self.points.items()
                                     for p in points if id(p) in self.refused[group]),
            "poll_groups": {group: {"interval_s": self.intervals[group], "polls": self.polls[group],
                                    "overruns": self.overruns[group], "skipped_ticks": self.skipped_ticks[group],
                                    "achieved_per_s": self.achieved_rate(group)} for group in self.blocks},
            "failed_polls_in_a_row": self.failed_polls,
            "last_failure": self.last_failure or None,
            "errors": dict(self.errors),
            "point_errors": dict(self.point_errors),
            "attributes": self.attributes,
        }
