"""Modbus TCP simulator: a real pymodbus server whose registers follow the simulated physics.

Each unit (device) serves the register map it is given (the same map the
gateway reads, built from the gateway's config by ``pmgw simulate``): every
tick the device's physics is stepped and each metric is encoded into its
registers with its type, byte order, scale and offset; alarm bits follow the
device's protection relay. A conformance block at :data:`CONFORMANCE_BASE`
holds known values of every type in every byte order, so a client's decoding
can be checked against ground truth.

Encoding here is written independently of the connector's decoding on
purpose: a shared helper would let one bug hide in both.

Faults are injected as in every simulator (:class:`simulators.physics.Fault`);
a unit can also be made unresponsive (no answer: the client times out) or
busy (exception 6), to test what one dead device does to the others.
"""

from __future__ import annotations

import asyncio
import logging
import math
import struct
from dataclasses import dataclass, field
from typing import Any

from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from simulators.clock import tick_in_simulated_time
from simulators.physics import DeviceModel, DeviceSpec, Fault

log = logging.getLogger(__name__)

TABLE_SIZE = 2048  # registers per table; bits: 16 x this
CONFORMANCE_BASE = 1500
_FUNCTION_TABLE = {1: "coil", 2: "discrete", 3: "holding", 4: "input"}
_STRUCT = {"int16": "h", "uint16": "H", "int32": "i", "uint32": "I", "int64": "q", "uint64": "Q",
           "float32": "f", "float64": "d"}
_INTEGER_RANGE = {name: (-(2 ** (8 * struct.calcsize(f) - 1)), 2 ** (8 * struct.calcsize(f) - 1) - 1)
                  if f.islower() else (0, 2 ** (8 * struct.calcsize(f)) - 1)
                  for name, f in _STRUCT.items() if name[0] in "iu"}

# Known values of every type; served in every byte order from CONFORMANCE_BASE on.
CONFORMANCE_VALUES: list[tuple[str, Any]] = [
    ("int16", -12345), ("uint16", 54321), ("int32", -123456789), ("uint32", 3456789012),
    ("int64", -1234567890123456), ("uint64", 12345678901234567890), ("float32", -273.15),
    ("float64", 2.718281828459045), ("string", "PMGW-SIM"),
]
BYTE_ORDERS = ("ABCD", "DCBA", "BADC", "CDAB")


def encode(value: Any, value_type: str, byte_order: str, length: int | None = None) -> list[int]:
    """Registers holding ``value`` as a device with ``byte_order`` would store it."""
    if value_type == "string":
        raw = str(value).encode("ascii").ljust(2 * (length or 1), b"\x00")[: 2 * (length or 1)]
        pairs = [(raw[i], raw[i + 1]) for i in range(0, len(raw), 2)]
        if byte_order in ("BADC", "DCBA"):
            pairs = [(b, a) for a, b in pairs]
        return [a << 8 | b for a, b in pairs]
    data = struct.pack(">" + _STRUCT[value_type], value)
    words = [(data[i], data[i + 1]) for i in range(0, len(data), 2)]
    if byte_order in ("CDAB", "DCBA"):
        words.reverse()
    if byte_order in ("BADC", "DCBA"):
        words = [(b, a) for a, b in words]
    return [a << 8 | b for a, b in words]


def width(value_type: str, length: int | None = None) -> int:
    if value_type == "string":
        return length or 1
    return max(1, struct.calcsize(_STRUCT.get(value_type, "H")) // 2)


@dataclass(frozen=True)
class ConformancePoint:
    address: int
    type: str
    byte_order: str
    value: Any
    length: int | None = None


def conformance_points(base: int = CONFORMANCE_BASE) -> list[ConformancePoint]:
    """Where each known value sits in the holding registers (0-based)."""
    points = []
    address = base
    for value_type, value in CONFORMANCE_VALUES:
        length = (len(value) + 1) // 2 if value_type == "string" else None
        for order in BYTE_ORDERS:
            points.append(ConformancePoint(address, value_type, order, value, length))
            address += width(value_type, length)
    return points


@dataclass(frozen=True)
class RegisterSpec:
    """A metric served in ``table`` at 0-based ``address``: raw = (value - offset) / scale."""

    metric: str
    table: str = "holding"
    address: int = 0
    type: str = "uint16"
    byte_order: str = "ABCD"
    scale: float = 1.0
    offset: float = 0.0
    bit: int | None = None


@dataclass(frozen=True)
class AlarmBitSpec:
    """Set while the device's protection relay reports ``code``."""

    code: str
    table: str = "discrete"
    address: int = 0
    bit: int | None = None
    active_when: int = 1


@dataclass(frozen=True)
class TextSpec:
    text: str
    table: str = "holding"
    address: int = 0
    length: int = 1
    byte_order: str = "ABCD"


@dataclass
class ModbusUnit:
    device: DeviceSpec
    unit_id: int
    registers: list[RegisterSpec] = field(default_factory=list)
    alarm_bits: list[AlarmBitSpec] = field(default_factory=list)
    texts: list[TextSpec] = field(default_factory=list)


class _Image:
    """What one unit serves: registers of the two register tables, bits of the two bit tables."""

    def __init__(self) -> None:
        self.words = {"holding": [0] * TABLE_SIZE, "input": [0] * TABLE_SIZE}
        self.bits = {"coil": [False] * (16 * TABLE_SIZE), "discrete": [False] * (16 * TABLE_SIZE)}

    def put(self, table: str, address: int, registers: list[int]) -> None:
        self.words[table][address: address + len(registers)] = registers

    def set_bit(self, table: str, address: int, bit: int | None, on: bool) -> None:
        if table in self.bits:
            self.bits[table][address] = on
            return
        mask = 1 << (bit or 0)
        word = self.words[table][address]
        self.words[table][address] = (word | mask) if on else (word & ~mask)

    def packed_bits(self, table: str) -> list[int]:
        bits = self.bits[table]
        return [sum(1 << i for i in range(16) if bits[16 * r + i]) for r in range(TABLE_SIZE)]


def _raw(value: float, spec: RegisterSpec) -> int | float:
    raw = (value - spec.offset) / spec.scale
    if spec.type in _INTEGER_RANGE:
        low, high = _INTEGER_RANGE[spec.type]
        return int(min(high, max(low, round(raw)))) if math.isfinite(raw) else 0
    return raw


class ModbusSimulator:
    """Serve units on one TCP port; ``tick`` advances simulated time and updates every register."""

    def __init__(
        self, units: list[ModbusUnit], host: str = "127.0.0.1", port: int = 5020, interval_s: float = 1.0,
        acceleration: float = 1.0, seed: int = 1, faults: list[Fault] | None = None,
    ) -> None:
        self.units = {unit.unit_id: unit for unit in units}
        self.host = host
        self.port = port
        self.interval_s = interval_s
        self.acceleration = acceleration
        self.models = {unit.unit_id: DeviceModel(unit.device, seed=seed * 1000 + index)
                       for index, unit in enumerate(units)}
        self.images = {unit.unit_id: _Image() for unit in units}
        self.unresponsive: set[int] = set()
        self.busy: set[int] = set()
        # Units that answer every request, but only after this many seconds (a slow serial gateway).
        self.slow: dict[int, float] = {}
        self.sim_time = 0.0
        self.requests = 0
        self._server: ModbusTcpServer | None = None
        self._serving: asyncio.Task[None] | None = None
        for fault in faults or []:
            self.inject(fault)
        for unit_id, unit in self.units.items():
            image = self.images[unit_id]
            for point in conformance_points():
                image.put("holding", point.address, encode(point.value, point.type, point.byte_order, point.length))
            for text in unit.texts:
                image.put(text.table, text.address, encode(text.text, "string", text.byte_order, text.length))
        self.tick()

    def inject(self, fault: Fault) -> None:
        for unit_id, unit in self.units.items():
            if unit.device.id == fault.device_id:
                self.models[unit_id].inject(fault)
                return
        raise ValueError(f"no simulated Modbus device {fault.device_id!r}")

    def tick(self) -> dict[str, dict[str, float]]:
        """Step every device to the current simulated time; returns the metrics served."""
        served = {}
        for unit_id, unit in self.units.items():
            model, image = self.models[unit_id], self.images[unit_id]
            metrics = model.step(self.sim_time)
            for spec in unit.registers:
                if spec.metric not in metrics:
                    continue
                if spec.bit is not None or spec.table in image.bits:
                    image.set_bit(spec.table, spec.address, spec.bit, bool(metrics[spec.metric]))
                else:
                    image.put(spec.table, spec.address, encode(_raw(metrics[spec.metric], spec), spec.type, spec.byte_order))
            tripped = model.alarm(metrics)
            for alarm in unit.alarm_bits:
                on = tripped is not None and tripped[0] == alarm.code
                image.set_bit(alarm.table, alarm.address, alarm.bit, on == bool(alarm.active_when))
            served[unit.device.id] = metrics
        return served

    async def _serve_request(
        self, unit_id: int, function_code: int, start: int, address: int, count: int,
        registers: list[int], values: Any,
    ) -> ExcCodes | None:
        self.requests += 1
        if unit_id in self.unresponsive:
            await asyncio.sleep(3600)  # never answers; the client times out
        if unit_id in self.slow:
            await asyncio.sleep(self.slow[unit_id])
        if unit_id in self.busy:
            return ExcCodes.DEVICE_BUSY
        table = _FUNCTION_TABLE.get(function_code)
        if table is None:
            return ExcCodes.ILLEGAL_FUNCTION
        image = self.images[unit_id]
        registers[:] = image.packed_bits(table) if table in image.bits else image.words[table]
        return None

    def _sim_device(self, unit_id: int) -> SimDevice:
        async def action(function_code: int, start: int, address: int, count: int,
                         registers: list[int], values: Any) -> ExcCodes | None:
            return await self._serve_request(unit_id, function_code, start, address, count, registers, values)

        def block(kind: DataType) -> list[SimData]:
            return [SimData(0, count=TABLE_SIZE, values=False if kind is DataType.BITS else 0, datatype=kind)]

        return SimDevice(
            id=unit_id, action=action,
            simdata=(block(DataType.BITS), block(DataType.BITS), block(DataType.REGISTERS), block(DataType.REGISTERS)),
        )

    async def start(self) -> None:
        self._server = ModbusTcpServer([self._sim_device(u) for u in self.units], address=(self.host, self.port))
        self._serving = asyncio.create_task(self._server.serve_forever())
        for _ in range(100):
            if self._server.transport is not None:
                break
            await asyncio.sleep(0.02)
        log.info("Modbus simulator on %s:%d: units %s", self.host, self.port, sorted(self.units))

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.shutdown()
        if self._serving is not None:
            self._serving.cancel()
            await asyncio.gather(self._serving, return_exceptions=True)
        self._server = self._serving = None

    async def run(self, duration_s: float | None = None) -> None:
        """Serve and tick in simulated time until cancelled or ``duration_s`` simulated seconds passed."""
        await self.start()

        async def tick_at(sim_time: float) -> None:
            self.sim_time = sim_time
            self.tick()

        try:
            await tick_in_simulated_time(tick_at, self.interval_s, self.acceleration, duration_s)
        finally:
            await self.stop()
