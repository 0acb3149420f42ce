"""Shared core types: the only module every package may import.

This module is a leaf: it imports nothing else of pm-gateway, so connectors,
sinks, detectors and ticketing can all speak these types without depending on
one another. Data flows one way through them:

    Reading  (connectors)  ->  Anomaly / Alarm  (detectors, devices)  ->  work orders (ticketing)
"""

from __future__ import annotations

import enum
import math
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Protocol


class Quality(str, enum.Enum):
    """OPC UA style quality: only GOOD readings are scored by detectors."""

    GOOD = "good"
    UNCERTAIN = "uncertain"
    BAD = "bad"
    # A last value of a device that is offline now (never stored: the API marks it so when it shows it).
    STALE = "stale"


# Alarm code of the "device offline" event every connector raises for a silent device.
DEVICE_OFFLINE_CODE = "OFFLINE"


class Criticality(str, enum.Enum):
    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"


class Severity(str, enum.Enum):
    CRITICAL = "critical"
    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"


@dataclass(slots=True)
class Reading:
    """One value of one metric of one device at one instant.

    ``timestamp`` is seconds since the Unix epoch (UTC), from the source when
    the source has one.
    """

    device_id: str
    metric: str
    value: float
    timestamp: float
    quality: Quality = Quality.GOOD
    source: str = ""

    def is_scorable(self) -> bool:
        return self.quality is Quality.GOOD and math.isfinite(self.value)


@dataclass(slots=True)
class Site:
    id: str
    name: str
    latitude: float
    longitude: float
    # Conditions a failure analysis needs: humidity, ambient temperature, altitude, water hardness...
    environment: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Asset:
    """A monitored device and the context a work order needs about it."""

    id: str
    type: str
    model: str
    serial: str
    site: Site
    criticality: Criticality = Criticality.MEDIUM
    firmware: str = ""
    name: str = ""

    def as_dict(self) -> dict[str, Any]:
        fields = asdict(self)
        fields["criticality"] = self.criticality.value
        return fields


@dataclass(frozen=True, slots=True)
class SeriesInfo:
    """What a series (device x metric) is beyond its values, kept once per series, not per reading:
    its unit and the data type its source sends (``uint32``, ``Int16``, ``Double``…)."""

    unit: str = ""
    data_type: str = ""


@dataclass(slots=True)
class Anomaly:
    """A detector's judgement that a device is not behaving normally."""

    device_id: str
    detected_at: float
    detector: str
    score: float
    severity: Severity
    failure_mode: str
    metrics: list[str]
    message: str
    evidence: list[Reading] = field(default_factory=list)
    failure_mechanism: str = ""
    maintainable_item: str = ""
    # A forecast: when the metric is expected to cross its limit (a preventive work order's due date).
    due_at: float | None = None
    # The limit the first metric crossed (or will cross) when a fixed limit raised it: the line a
    # report draws through the evidence.
    limit: float | None = None


class PartlyScored(Exception):
    """A detector stage lost some readings of a batch (a worker process died) but scored the rest."""

    def __init__(self, anomalies: list[Anomaly], unscored: int) -> None:
        super().__init__(f"{unscored} readings not scored")
        self.anomalies = anomalies
        self.unscored = unscored


@dataclass(slots=True)
class Alarm:
    """An alarm raised by the equipment itself (not by a detector)."""

    device_id: str
    raised_at: float
    code: str
    severity: Severity
    message: str
    active: bool = True
    source: str = ""
    # Which condition instance raised or cleared it, where the protocol says (OPC UA: the ConditionId);
    # empty: the device and code identify it.
    condition_id: str = ""


@dataclass(slots=True)
class WorkOrderEvent:
    """Something that happened to a work order; published to subscribers."""

    work_order_code: str
    kind: str
    at: float
    actor: str
    data: dict[str, Any] = field(default_factory=dict)
    device_id: str = ""


# Called once what was handed over is durable (readings stored, an alarm ticketed), from any thread.
Done = Callable[[], None]


class ReadingSink(Protocol):
    """Where readings go: connectors push batches of readings into one.

    ``on_stored`` is called once the batch is in every sink (or a sink's failure
    was counted), in hand-over order; a connector acknowledges its protocol's
    messages then, so a crash before that makes the source send them again.
    An empty batch with ``on_stored`` keeps that order for messages that carried
    no readings.
    """

    async def put(self, readings: list[Reading], on_stored: Done | None = None) -> None: ...


class AlarmSink(Protocol):
    """Where device alarms go, straight to ticketing; ``on_done`` once ticketing has handled it."""

    async def put_alarm(self, alarm: Alarm, on_done: Done | None = None) -> None: ...
