"""Simulators built from the gateway's own config: the same file describes what to serve and what to read."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

from connectors.modbus import ModbusSourceConfig
from connectors.modbus.const import BIT_TABLES
from gateway.config import GatewayConfig
from connectors.opcua import OpcUaSourceConfig
from simulators.opcua_server import OpcUaSimulator
from simulators.modbus_server import AlarmBitSpec, ModbusSimulator, ModbusUnit, RegisterSpec, TextSpec
from simulators.physics import DeviceSpec, Fault


def device_specs(config: GatewayConfig) -> dict[str, DeviceSpec]:
    """Every asset as the simulators model it: its type, model and its site's numeric environment."""
    environments = {site.id: {k: float(v) for k, v in site.environment.items() if isinstance(v, (int, float))}
                    for site in config.sites}
    return {asset.id: DeviceSpec(asset.id, asset.type, asset.site, asset.model, environments[asset.site])
            for asset in config.assets}


def modbus_simulator_for(
    config: GatewayConfig, source: ModbusSourceConfig, acceleration: float, seed: int,
    faults: list[Fault], port: int | None = None,
) -> ModbusSimulator:
    """A Modbus server with one unit per device of ``source``, serving its register map."""
    assets = {asset.id: asset for asset in config.assets}
    specs = device_specs(config)
    base = source.address_base
    units = []
    for device in source.devices:
        asset = assets[device.device]
        units.append(ModbusUnit(
            specs[asset.id], device.unit_id,
            registers=[RegisterSpec(r.metric, r.table, r.address - base, r.type if r.table not in BIT_TABLES else "bool",
                                    r.byte_order, r.scale, r.offset, r.bit) for r in device.registers],
            alarm_bits=[AlarmBitSpec(a.code, a.table, a.address - base, a.bit, a.active_when) for a in device.alarms],
            texts=[TextSpec(_info_text(i.name, asset.serial, asset.firmware), i.table, i.address - base,
                            i.length or 1, i.byte_order) for i in device.info if i.type == "string"],
        ))
    return ModbusSimulator(units, host=source.host, port=port or source.port, interval_s=source.interval_s,
                           acceleration=acceleration, seed=seed, faults=faults)


def _info_text(name: str, serial: str, firmware: str) -> str:
    return {"serial": serial, "firmware": firmware}.get(name, name.upper())


def opcua_simulator_for(
    config: GatewayConfig, source: OpcUaSourceConfig, acceleration: float, seed: int, faults: list[Fault],
    port: int | None = None, certificate_dir: Path | None = None,
) -> OpcUaSimulator:
    """An OPC UA server with the devices of ``source``, at the host and port of its URL (or ``port``).

    With ``certificate_dir`` it runs Basic256Sha256 Sign/SignAndEncrypt with a certificate kept there;
    the source's username and password, if any, are the one identity it accepts.
    """
    specs = device_specs(config)
    endpoint = urlparse(source.url)
    users = {source.username: source.password or ""} if source.username else None
    return OpcUaSimulator(
        [specs[d.device] for d in source.devices],
        host=endpoint.hostname or "127.0.0.1", port=port or endpoint.port or 4840, acceleration=acceleration,
        seed=seed, faults=faults, certificate_dir=certificate_dir, users=users,
    )
