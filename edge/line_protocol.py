"""InfluxDB line protocol for readings.

Schema (one measurement, bounded tag cardinality):

    telemetry,device=pump-01,metric=vibration,source=plant-broker,site=hamburg,model=Etanorm,type=pump value=2.1,quality="good" 1764064800250000000

Tags identify the series (device, metric, source connector, site, model, type, and where known its
``unit`` and source ``data_type``); fields carry the value and its quality. A BAD reading without a
value keeps only its quality.
Timestamps are nanoseconds, from the source.

>>> from gateway.core import Reading
>>> to_line(Reading("pump 1", "vibration", 2.5, 1764064800.25), {"site": "north"})
'telemetry,device=pump\\\\ 1,metric=vibration,site=north value=2.5,quality="good" 1764064800250000000'
>>> to_line(Reading("p1", "speed", 1450.0, 1764064800.25), {}, SeriesInfo("rpm", "uint32"))
'telemetry,device=p1,metric=speed,unit=rpm,data_type=uint32 value=1450.0,quality="good" 1764064800250000000'
"""

from __future__ import annotations

import math

import orjson

from gateway.core import Anomaly, Quality, Reading, SeriesInfo, WorkOrderEvent

MEASUREMENT = "telemetry"
ANOMALIES = "anomalies"
WORK_ORDER_EVENTS = "work_order_events"

_TAG_ESCAPES = str.maketrans({",": r"\,", "=": r"\=", " ": r"\ "})


def escape_tag(value: str) -> str:
    return value.translate(_TAG_ESCAPES)


def escape_string_field(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def nanoseconds(timestamp: float) -> int:
    # Through whole microseconds (exact in a float until year 2255), so
    # 1764064800.25 does not become ...249999872.
    return round(timestamp * 1_000_000) * 1000


def to_line(reading: Reading, series_tags: dict[str, str], info: SeriesInfo | None = None) -> str:
    return reading_line(series_prefix(reading.device_id, reading.metric, reading.source, series_tags, info), reading)


def series_prefix(device_id: str, metric: str, source: str, series_tags: dict[str, str],
                  info: SeriesInfo | None) -> str:
    """Measurement and tags: the same for every reading of a series, so a sink can keep it."""
    tags = f"device={escape_tag(device_id)},metric={escape_tag(metric)}"
    if source:
        tags += f",source={escape_tag(source)}"
    if info is not None:
        if info.unit:
            tags += f",unit={escape_tag(info.unit)}"
        if info.data_type:
            tags += f",data_type={escape_tag(info.data_type)}"
    for key, value in series_tags.items():
        if value:
            tags += f",{key}={escape_tag(value)}"
    return f"{MEASUREMENT},{tags}"


_QUALITY_FIELDS = {quality: f'quality="{quality.value}"' for quality in Quality}


def reading_line(prefix: str, reading: Reading) -> str:
    value = reading.value
    fields = _QUALITY_FIELDS[reading.quality]
    if math.isfinite(value):
        fields = f"value={value!r},{fields}"
    return f"{prefix} {fields} {nanoseconds(reading.timestamp)}"


def _tags(pairs: dict[str, str]) -> str:
    return ",".join(f"{key}={escape_tag(value)}" for key, value in pairs.items() if value)


def anomaly_line(anomaly: Anomaly, series_tags: dict[str, str]) -> str:
    """Anomalies as their own measurement, so a dashboard can overlay them on the telemetry."""
    tags = _tags({"device": anomaly.device_id, "detector": anomaly.detector, "failure_mode": anomaly.failure_mode,
                  "severity": anomaly.severity.value, **series_tags})
    fields = (f"score={float(anomaly.score)!r},metrics={escape_string_field(','.join(anomaly.metrics))},"
              f"message={escape_string_field(anomaly.message)}")
    return f"{ANOMALIES},{tags} {fields} {nanoseconds(anomaly.detected_at)}"


def work_order_event_line(event: WorkOrderEvent, series_tags: dict[str, str]) -> str:
    tags = _tags({"device": event.device_id, "kind": event.kind, **series_tags})
    fields = (f"code={escape_string_field(event.work_order_code)},actor={escape_string_field(event.actor)},"
              f"data={escape_string_field(orjson.dumps(event.data).decode())}")
    return f"{WORK_ORDER_EVENTS},{tags} {fields} {nanoseconds(event.at)}"
