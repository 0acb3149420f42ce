"""Configuration schema and validators of the Modbus TCP connector.

A source is one or more devices (each its own TCP connection, so a dead one
never stalls the others), each with a register map: which table and address
holds which metric, as which type and byte order, with scale and offset.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from connectors.base import listed_twice

from connectors.modbus.const import (
    BIT_TABLES, BYTE_ORDERS, MAX_REGISTERS_PER_READ, TYPE_WIDTH, VALUE_TYPES,
)
from gateway.core import Severity

Table = Literal["holding", "input", "coil", "discrete"]
ValueType = Literal[VALUE_TYPES]  # type: ignore[valid-type]
ByteOrder = Literal[BYTE_ORDERS]  # type: ignore[valid-type]
DEFAULT_GROUP = "default"


class _Point(BaseModel):
    """Where a value sits: table, address (0- or 1-based per ``address_base``), type, byte order."""

    model_config = ConfigDict(extra="forbid")

    table: Table = "holding"
    address: int = Field(ge=0, le=65535)
    type: ValueType | None = Field(None, description="default: bool for coils and discrete inputs, else uint16")
    byte_order: ByteOrder = "ABCD"
    bit: int | None = Field(None, ge=0, le=63, description="read one bit of an integer register as 0/1")
    bit_length: int = Field(1, ge=1, le=64, description="with 'bit': a field of this many bits from it "
                                                        "(e.g. a mode in bits 4-7: bit 4, bit_length 4)")
    length: int | None = Field(None, ge=1, le=MAX_REGISTERS_PER_READ, description="registers of a string")
    group: str = DEFAULT_GROUP

    @property
    def width(self) -> int:
        """Registers (or bits, for coils and discrete inputs) the value occupies."""
        if self.table in BIT_TABLES:
            return 1
        if self.type == "string":
            return self.length or 1
        return TYPE_WIDTH[self.type]

    @model_validator(mode="after")
    def _check_type(self) -> "_Point":
        if self.type is None:
            self.type = "bool" if self.table in BIT_TABLES else "uint16"
        if self.table in BIT_TABLES and self.type != "bool":
            raise ValueError(f"a {self.table} holds one bit: its type must be bool, not {self.type}")
        if self.type == "string" and self.length is None:
            raise ValueError("a string needs 'length' (registers, two characters each)")
        if self.type != "string" and self.length is not None:
            raise ValueError("'length' is only for strings")
        if self.bit is not None:
            if self.table in BIT_TABLES or self.type in ("string", "float32", "float64"):
                raise ValueError("'bit' picks a bit of an integer register")
            if self.bit + self.bit_length > 16 * TYPE_WIDTH[self.type]:
                last = f"bits {self.bit}-{self.bit + self.bit_length - 1}" if self.bit_length > 1 else f"bit {self.bit}"
                raise ValueError(f"{last} are outside a {self.type}" if self.bit_length > 1
                                 else f"{last} is outside a {self.type}")
        elif self.bit_length != 1:
            raise ValueError("'bit_length' needs 'bit', the field's lowest bit")
        return self


class RegisterConfig(_Point):
    """A metric read from the device: value = raw x scale + offset."""

    metric: str = Field(min_length=1)
    unit: str = ""
    scale: float = 1.0
    offset: float = 0.0

    @model_validator(mode="after")
    def _numeric(self) -> "RegisterConfig":
        if self.type == "string":
            raise ValueError("a metric is a number; read text registers under 'info'")
        return self


class InfoConfig(_Point):
    """Text or numbers describing the device (serial, firmware), read on every connect."""

    name: str = Field(min_length=1)


class AlarmBitConfig(_Point):
    """A status or alarm bit: raises an alarm with ``code`` while it is set (or clear, with active_when 0)."""

    type: ValueType = "bool"
    code: str = Field(min_length=1, pattern=r"^[A-Z0-9_]+$")
    severity: Severity = Severity.HIGH
    message: str = ""
    active_when: Literal[0, 1] = 1

    @model_validator(mode="after")
    def _one_bit(self) -> "AlarmBitConfig":
        if self.table not in BIT_TABLES and self.bit is None:
            raise ValueError("an alarm on a register needs 'bit'")
        return self


class PollGroupConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    interval_s: float = Field(gt=0, le=86400)


class ModbusDeviceConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    device: str = Field(min_length=1, description="asset id")
    unit_id: int = Field(1, ge=0, le=255)
    host: str | None = Field(None, description="defaults to the source's host")
    port: int | None = Field(None, ge=1, le=65535)
    registers: list[RegisterConfig] = Field(default_factory=list)
    alarms: list[AlarmBitConfig] = Field(default_factory=list)
    info: list[InfoConfig] = Field(default_factory=list)

    @model_validator(mode="after")
    def _something_to_read(self) -> "ModbusDeviceConfig":
        if not self.registers and not self.alarms:
            raise ValueError("a device needs 'registers' or 'alarms'")
        twice = listed_twice([register.metric for register in self.registers])
        if twice:
            raise ValueError(f"metric(s) {', '.join(twice)} mapped twice")
        return self


class ModbusSourceConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["modbus"]
    name: str = "modbus"
    host: str = "127.0.0.1"
    port: int = Field(502, ge=1, le=65535)
    address_base: Literal[0, 1] = Field(0, description="1: addresses in this file count from 1")
    timeout_s: float = Field(1.0, gt=0, le=60)
    retries: int = Field(1, ge=0, le=10, description="tries again after a timeout before counting it")
    reconnect_min_s: float = Field(0.5, gt=0)
    reconnect_max_s: float = Field(30.0, gt=0)
    interval_s: float = Field(1.0, gt=0, le=86400, description="interval of the 'default' poll group")
    poll_groups: dict[str, PollGroupConfig] = Field(default_factory=dict)
    max_registers_per_read: int = Field(MAX_REGISTERS_PER_READ, ge=1, le=MAX_REGISTERS_PER_READ)
    max_gap: int = Field(8, ge=0, le=MAX_REGISTERS_PER_READ, description="unused registers read to join two reads")
    offline_after_intervals: int = Field(3, ge=1, description="failed polls in a row before 'device offline'")
    devices: list[ModbusDeviceConfig] = Field(min_length=1)

    def group_interval(self, group: str) -> float:
        return self.poll_groups[group].interval_s if group in self.poll_groups else self.interval_s

    @model_validator(mode="after")
    def _check(self) -> "ModbusSourceConfig":
        if self.reconnect_max_s < self.reconnect_min_s:
            raise ValueError("reconnect_max_s must not be below reconnect_min_s")
        groups = {DEFAULT_GROUP, *self.poll_groups}
        for device in self.devices:
            for point in (*device.registers, *device.alarms):
                if point.group not in groups:
                    raise ValueError(f"{device.device}: unknown poll group {point.group!r} (known: {', '.join(sorted(groups))})")
                if point.address < self.address_base:
                    raise ValueError(f"{device.device}: address {point.address} is below address_base {self.address_base}")
                if point.address - self.address_base + point.width > 65536:
                    raise ValueError(f"{device.device}: address {point.address} runs past the end of the table")
        twice = listed_twice([device.device for device in self.devices])
        if twice:
            raise ValueError(f"device(s) {', '.join(twice)} listed twice")
        return self
