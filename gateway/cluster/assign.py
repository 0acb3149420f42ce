"""Which gateway runs which work unit: rendezvous hashing over the live members.

Every gateway computes the same answer from the same member list, so they agree without talking to
each other; when a member joins or leaves, only the units it wins or held move.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Unit:
    """What one gateway owns at a time: a partition of an MQTT source, or a whole source."""

    id: str
    source: str
    partition: int | None = None


def _weight(*parts: str) -> bytes:
    return hashlib.blake2b("\x1f".join(parts).encode(), digest_size=8).digest()


def partition_of(device_id: str, partitions: int) -> int:
    """Stable across processes and versions (a salted ``hash`` is not).

    >>> partition_of("pump-01", 12) == partition_of("pump-01", 12)
    True
    """
    return int.from_bytes(_weight("partition", device_id), "big") % partitions


def owner_of(unit_id: str, members: list[str]) -> str | None:
    """The member that wins the unit, or None without members.

    >>> owner_of("mqtt/plant/3", ["gw-a"])
    'gw-a'
    >>> owner_of("mqtt/plant/3", []) is None
    True
    """
    return max(members, key=lambda member: _weight(unit_id, member), default=None)


def partitionable(source: Any) -> bool:
    """An MQTT source whose topics name the device can be split by device; any other source is one unit
    (Sparkplug tracks sequence numbers per edge node; a shared subscription already splits by message)."""
    return getattr(source, "type", None) == "mqtt" and source.sparkplug is None and source.shared_group is None


def units_of(sources: list[Any], partitions: int) -> list[Unit]:
    units: list[Unit] = []
    for source in sources:
        if partitionable(source):
            units += [Unit(f"mqtt/{source.name}/{k}", source.name, k) for k in range(partitions)]
        else:
            units.append(Unit(f"source/{source.name}", source.name))
    return units


def listed_devices(source: Any) -> list[str] | None:
    """The devices a source names (Modbus, OPC UA), or None for one that takes whatever its topics carry."""
    devices = getattr(source, "devices", None)
    if getattr(source, "type", None) == "mqtt" or devices is None:
        return None
    return [device.device for device in devices]


def unit_devices(unit: Unit, sources: list[Any], devices: list[str], partitions: int) -> list[str]:
    """The devices whose readings and detector state go with the unit. A device a Modbus or OPC UA source
    names is that source's; every other device belongs to the MQTT partition it hashes to."""
    source = next(s for s in sources if s.name == unit.source)
    listed = listed_devices(source)
    if listed is not None:
        return sorted(listed)
    elsewhere = {device for s in sources for device in (listed_devices(s) or [])}
    free = [device for device in devices if device not in elsewhere]
    if unit.partition is None:
        return sorted(free)
    return sorted(device for device in free if partition_of(device, partitions) == unit.partition)


def unit_source(unit: Unit, source: Any, devices: list[str]) -> Any:
    """The source configuration the unit's connector runs with: a partition subscribes to its own
    ``devices`` under a session of its own, which the next owner resumes."""
    if unit.partition is None:
        return source
    return source.model_copy(update={
        "name": f"{source.name}/p{unit.partition}",
        "client_id": f"{source.client_id}-p{unit.partition}",
        "devices": devices,
    })
