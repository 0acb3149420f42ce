"""Connectors by name: the ``type`` of a source in the config picks one."""

from __future__ import annotations

from typing import Annotated, Union

from pydantic import Field

from connectors.base import Connector
from connectors.modbus import ModbusConnector, ModbusSourceConfig
from connectors.mqtt import MqttConnector, MqttSourceConfig
from connectors.opcua import OpcUaConnector, OpcUaSourceConfig

# Every source schema, told apart by its ``type``; add new protocols here.
SourceConfig = Annotated[Union[MqttSourceConfig, ModbusSourceConfig, OpcUaSourceConfig], Field(discriminator="type")]


def build_connector(config: SourceConfig, known_devices: set[str]) -> Connector:
    if isinstance(config, MqttSourceConfig):
        return MqttConnector(config, known_devices)
    if isinstance(config, ModbusSourceConfig):
        return ModbusConnector(config, known_devices)
    if isinstance(config, OpcUaSourceConfig):
        return OpcUaConnector(config, known_devices)
    raise ValueError(f"no connector for source type {config.type!r}")
