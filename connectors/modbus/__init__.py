"""Modbus TCP connector (pymodbus 3.x): register maps, coalesced polling groups, per-device isolation."""

from connectors.modbus.connector import ModbusConnector
from connectors.modbus.schema import ModbusSourceConfig

__all__ = ["ModbusConnector", "ModbusSourceConfig"]
