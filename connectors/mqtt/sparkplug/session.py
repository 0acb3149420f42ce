"""Sparkplug B as a host application sees it: pure state, no I/O.

One :class:`EdgeNode` per (group, edge node) remembers the node's birth
(``bdSeq``, metric aliases of the node and of each device) and the message
sequence number. :func:`handle` turns one message into readings, alarms and
whether a rebirth must be requested (a sequence gap, or data whose aliases
were never born). Topic: ``spBv1.0/<group>/<type>/<edge node>[/<device>]``.

>>> from connectors.mqtt.sparkplug.sparkplug_b_pb2 import Payload
>>> def message(seq, metrics, bd_seq=None):
...     payload = Payload(timestamp=1764064800000, seq=seq)
...     for name, alias, value in metrics:
...         metric = payload.metrics.add(alias=alias, datatype=10, double_value=value)
...         if name:
...             metric.name = name
...     if bd_seq is not None:
...         payload.metrics.add(name="bdSeq", datatype=8, long_value=bd_seq)
...     return payload.SerializeToString()
>>> nodes = {}
>>> _ = handle(nodes, "spBv1.0/plant/NBIRTH/edge-1", message(0, [], bd_seq=3), 0.0, "mqtt")
>>> born = handle(nodes, "spBv1.0/plant/DBIRTH/edge-1/pump-01", message(1, [("vibration", 7, 2.5)]), 0.0, "mqtt")
>>> [(r.device_id, r.metric, r.value) for r in born.readings]
[('pump-01', 'vibration', 2.5)]
>>> data = handle(nodes, "spBv1.0/plant/DDATA/edge-1/pump-01", message(2, [(None, 7, 2.7)]), 0.0, "mqtt")
>>> [(r.metric, r.value) for r in data.readings], data.rebirth
([('vibration', 2.7)], False)
>>> gap = handle(nodes, "spBv1.0/plant/DDATA/edge-1/pump-01", message(9, [(None, 7, 2.8)]), 0.0, "mqtt")
>>> [(r.metric, r.value) for r in gap.readings], gap.rebirth, gap.errors
([('vibration', 2.8)], True, ['sequence_gap'])

Data of a node or device that was never born is rejected, not stored, and a rebirth requested:

>>> unborn = handle({}, "spBv1.0/plant/NDATA/edge-2", message(5, [("flow", 1, 3.0)]), 0.0, "mqtt")
>>> unborn.readings, unborn.errors, unborn.rebirth
([], ['data_before_birth'], True)
>>> stranger = handle(nodes, "spBv1.0/plant/DDATA/edge-1/pump-09", message(10, [("flow", 1, 3.0)]), 0.0, "mqtt")
>>> stranger.readings, stranger.errors
([], ['data_before_birth'])
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from google.protobuf.message import DecodeError

from connectors.mqtt.sparkplug.sparkplug_b_pb2 import Payload
from gateway.core import DEVICE_OFFLINE_CODE, Alarm, Quality, Reading, Severity

NAMESPACE = "spBv1.0"
BD_SEQ = "bdSeq"
REBIRTH_METRIC = "Node Control/Rebirth"
# Metrics a host does not store as telemetry: node control and birth bookkeeping.
_CONTROL_PREFIXES = ("Node Control/", "Device Control/", BD_SEQ)
# Ignition-style OPC quality in a metric's "Quality" property: 192 good, 64..191 uncertain.
_GOOD_QUALITY = 192
# Sparkplug B 3.0 data types, by the number a metric carries.
DATA_TYPES = {1: "Int8", 2: "Int16", 3: "Int32", 4: "Int64", 5: "UInt8", 6: "UInt16", 7: "UInt32", 8: "UInt64",
              9: "Float", 10: "Double", 11: "Boolean", 12: "String", 13: "DateTime", 14: "Text"}
ENG_UNIT = "engUnit"  # the metric property with its engineering unit

_FROM_EDGE_NODES = {"NBIRTH", "NDEATH", "DBIRTH", "DDEATH", "NDATA", "DDATA"}

ERR_NOT_SPARKPLUG = "sparkplug_topic"
ERR_BAD_PAYLOAD = "sparkplug_payload"
ERR_SEQUENCE_GAP = "sequence_gap"
ERR_UNKNOWN_ALIAS = "unknown_alias"
ERR_NOT_BORN = "data_before_birth"
ERR_STALE_DEATH = "stale_death"
ERR_NON_NUMERIC = "non_numeric_metric"


@dataclass
class EdgeNode:
    bd_seq: int | None = None
    seq: int | None = None
    born: bool = False
    aliases: dict[str | None, dict[int, str]] = field(default_factory=dict)  # device (None: the node) -> alias -> name
    devices: set[str] = field(default_factory=set)  # born and alive
    offline: set[str] = field(default_factory=set)  # died, not born again yet
    # (device or node, metric) -> (engineering unit, data type name), from the births.
    series: dict[tuple[str, str], tuple[str, str]] = field(default_factory=dict)


@dataclass
class Outcome:
    readings: list[Reading] = field(default_factory=list)
    alarms: list[Alarm] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    rebirth: bool = False
    edge_node: tuple[str, str] | None = None  # (group, edge node) to send a rebirth request to


def rebirth_request(group: str, edge_node: str, now: float) -> tuple[str, bytes]:
    """The NCMD topic and payload asking an edge node to publish its births again."""
    payload = Payload(timestamp=int(now * 1000))
    payload.metrics.add(name=REBIRTH_METRIC, datatype=11, boolean_value=True, timestamp=int(now * 1000))
    return f"{NAMESPACE}/{group}/NCMD/{edge_node}", payload.SerializeToString()


def _value(metric: Payload.Metric) -> float | None:
    kind = metric.WhichOneof("value")
    if kind in ("int_value", "long_value"):
        raw = int(getattr(metric, kind))
        # Signed types travel as two's complement in the unsigned fields.
        bits = {1: 8, 2: 16, 3: 32, 4: 64}.get(metric.datatype)
        if bits is not None and raw >= 1 << (bits - 1):
            raw -= 1 << bits
        return float(raw)
    if kind in ("float_value", "double_value"):
        return float(getattr(metric, kind))
    if kind == "boolean_value":
        return 1.0 if metric.boolean_value else 0.0
    return None


def _quality(metric: Payload.Metric) -> Quality:
    if metric.is_null:
        return Quality.BAD
    properties = metric.properties
    for key, value in zip(properties.keys, properties.values):
        if key.lower() == "quality" and value.WhichOneof("value") in ("int_value", "long_value"):
            code = int(getattr(value, value.WhichOneof("value")))
            return Quality.GOOD if code >= _GOOD_QUALITY else Quality.UNCERTAIN if code >= 64 else Quality.BAD
    return Quality.GOOD


def _eng_unit(metric: Payload.Metric) -> str:
    properties = metric.properties
    for key, value in zip(properties.keys, properties.values):
        if key == ENG_UNIT and value.WhichOneof("value") == "string_value":
            return value.string_value
    return ""


def _offline(device: str, at: float, active: bool, why: str, source: str) -> Alarm:
    return Alarm(device, at, DEVICE_OFFLINE_CODE, Severity.MEDIUM, why, active=active, source=source)


def handle(nodes: dict[tuple[str, str], EdgeNode], topic: str, raw: bytes, received_at: float, source: str) -> Outcome:
    parts = topic.split("/")
    outcome = Outcome()
    if len(parts) not in (4, 5) or parts[0] != NAMESPACE:
        outcome.errors.append(ERR_NOT_SPARKPLUG)
        return outcome
    group, kind, edge = parts[1], parts[2], parts[3]
    device = parts[4] if len(parts) == 5 else None
    if kind not in _FROM_EDGE_NODES:
        return outcome  # commands (ours included) and host STATE are not telemetry
    try:
        payload = Payload.FromString(raw)
    except DecodeError:
        outcome.errors.append(ERR_BAD_PAYLOAD)
        return outcome
    node = nodes.setdefault((group, edge), EdgeNode())
    outcome.edge_node = (group, edge)
    at = payload.timestamp / 1000.0 if payload.HasField("timestamp") else received_at

    if kind == "NBIRTH":
        bd_seq = next((int(m.long_value) for m in payload.metrics if m.name == BD_SEQ), None)
        node.bd_seq, node.seq, node.born = bd_seq, payload.seq, True
        node.aliases = {None: {}}
        node.devices = set()
        if edge in node.offline:
            node.offline.discard(edge)
            outcome.alarms.append(_offline(edge, at, False, f"edge node {edge} born again", source))
    elif kind == "NDEATH":
        bd_seq = next((int(m.long_value) for m in payload.metrics if m.name == BD_SEQ), None)
        if node.born and bd_seq is not None and node.bd_seq is not None and bd_seq != node.bd_seq:
            outcome.errors.append(ERR_STALE_DEATH)  # the will of an earlier session: not this one's death
            return outcome
        node.born = False
        for asset in sorted({edge, *node.devices} - node.offline):
            node.offline.add(asset)
            outcome.alarms.append(_offline(asset, received_at, True, f"edge node {edge} died (NDEATH)", source))
        node.devices = set()
        return outcome
    elif not node.born:
        # Without a birth there are no aliases, units or a sequence to trust: the data is rejected
        # (counted, never stored) and the node asked to publish its births again.
        outcome.errors.append(ERR_NOT_BORN)
        outcome.rebirth = True
        return outcome
    else:
        if payload.HasField("seq"):
            expected = ((node.seq or 0) + 1) % 256
            if payload.seq != expected:
                outcome.errors.append(ERR_SEQUENCE_GAP)
                outcome.rebirth = True
            node.seq = payload.seq
        alive = node.devices if kind == "DDATA" else node.devices | node.offline
        if kind in ("DDATA", "DDEATH") and device not in alive:
            outcome.errors.append(ERR_NOT_BORN)  # a device with no DBIRTH (or none since its DDEATH)
            outcome.rebirth = True
            return outcome

    if kind == "DBIRTH" and device is not None:
        node.aliases[device] = {}
        node.devices.add(device)
        if device in node.offline:
            node.offline.discard(device)
            outcome.alarms.append(_offline(device, at, False, f"device {device} born again", source))
    if kind == "DDEATH" and device is not None:
        node.devices.discard(device)
        if device not in node.offline:
            node.offline.add(device)
            outcome.alarms.append(_offline(device, at, True, f"device {device} died (DDEATH)", source))
        return outcome
    if kind not in ("NBIRTH", "DBIRTH", "NDATA", "DDATA"):
        return outcome

    asset = device or edge
    aliases = node.aliases.setdefault(device, {})
    birth = kind.endswith("BIRTH")
    for metric in payload.metrics:
        name = metric.name if metric.HasField("name") else None
        if birth and name is not None and metric.HasField("alias"):
            aliases[int(metric.alias)] = name
        if name is None and metric.HasField("alias"):
            name = aliases.get(int(metric.alias))
            if name is None:
                outcome.errors.append(ERR_UNKNOWN_ALIAS)
                outcome.rebirth = True
                continue
        if name is None or name.startswith(_CONTROL_PREFIXES):
            continue
        if birth:
            node.series[(asset, name)] = (_eng_unit(metric), DATA_TYPES.get(metric.datatype, ""))
        value = _value(metric)
        if value is None and not metric.is_null:
            outcome.errors.append(ERR_NON_NUMERIC)
            continue
        timestamp = metric.timestamp / 1000.0 if metric.HasField("timestamp") else at
        quality = _quality(metric)
        outcome.readings.append(Reading(asset, name, value if value is not None else math.nan, timestamp,
                                        quality if value is not None else Quality.BAD, source))
    return outcome
