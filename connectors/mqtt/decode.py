"""Turn MQTT topics and payloads into Readings and Alarms.

Decoding is pure: no I/O, no clock except the receive time passed in, so it is
tested without a broker. Every rejection raises :class:`PayloadError` with a
counter name and a message that says what was wrong.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable

import orjson

from connectors.mqtt import const
from connectors.mqtt.schema import PayloadConfig
from gateway.core import Alarm, Quality, Reading, Severity


class PayloadError(ValueError):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class TopicTemplate:
    """``plant/{site}/{device}/telemetry`` as a subscription and a matcher."""

    template: str
    subscription: str
    pattern: re.Pattern[str]

    @classmethod
    def parse(cls, template: str) -> "TopicTemplate":
        subscription_parts: list[str] = []
        regex_parts: list[str] = []
        for segment in template.split("/"):
            if segment.startswith("{") and segment.endswith("}"):
                subscription_parts.append("+")
                regex_parts.append(f"(?P<{segment[1:-1]}>[^/]+)")
            elif segment == "+":
                subscription_parts.append("+")
                regex_parts.append("[^/]+")
            elif segment == "#":
                subscription_parts.append("#")
                regex_parts.append(".*")
            else:
                subscription_parts.append(segment)
                regex_parts.append(re.escape(segment))
        pattern = re.compile("^" + "/".join(regex_parts) + "$")
        return cls(template, "/".join(subscription_parts), pattern)

    def subscription_for(self, device_id: str) -> str:
        """The subscription of one device's topics: ``plant/+/pump-01/telemetry``."""
        return "/".join(device_id if segment == "{device}" else part
                        for segment, part in zip(self.template.split("/"), self.subscription.split("/")))

    def match(self, topic: str) -> dict[str, str] | None:
        found = self.pattern.match(topic)
        return found.groupdict() if found else None


def parse_timestamp(raw: Any, received_at: float) -> float:
    """Seconds since the epoch from seconds, milliseconds or ISO 8601; receive time when absent."""
    if raw is None:
        return received_at
    if isinstance(raw, bool):
        raise PayloadError(const.ERR_BAD_TIMESTAMP, f"timestamp {raw!r} is a boolean")
    if isinstance(raw, (int, float)):
        value = float(raw)
        if not math.isfinite(value) or value < 0:
            raise PayloadError(const.ERR_BAD_TIMESTAMP, f"timestamp {excerpt(raw)} is not a valid time")
        return value / 1000.0 if value > const.MILLISECONDS_THRESHOLD else value
    if isinstance(raw, str):
        try:
            parsed = datetime.fromisoformat(raw.replace("Z", "+00:00"))
        except ValueError:
            raise PayloadError(
                const.ERR_BAD_TIMESTAMP, f"timestamp {excerpt(raw)} is not ISO 8601 or epoch seconds"
            ) from None
        if parsed.tzinfo is None:
            raise PayloadError(const.ERR_BAD_TIMESTAMP, f"timestamp {excerpt(raw)} has no time zone")
        return parsed.timestamp()
    raise PayloadError(const.ERR_BAD_TIMESTAMP, f"timestamp has type {type(raw).__name__}")


def _metric_value(name: str, raw: Any) -> tuple[float, Quality]:
    if isinstance(raw, bool):
        return (1.0 if raw else 0.0), Quality.GOOD
    if isinstance(raw, (int, float)):
        value = float(raw)
        return value, (Quality.GOOD if math.isfinite(value) else Quality.BAD)
    if raw is None:
        # The device says it has no value: kept as a BAD reading, never scored.
        return math.nan, Quality.BAD
    raise PayloadError(
        const.ERR_WRONG_TYPE,
        f"metric {excerpt(name)} has a {type(raw).__name__} value {excerpt(raw)}, expected a number",
    )


def excerpt(value: Any, limit: int = const.EXCERPT_CHARS) -> str:
    """A short, safe description of a payload value for error messages and logs.

    Never ``repr`` of a container: a value nested a thousand levels deep would
    recurse past Python's limit while formatting the error.

    >>> excerpt("x" * 100, 10)
    "'xxxxxxxxxx'..."
    >>> excerpt([[[1]]])
    'a JSON array'
    """
    if isinstance(value, str):
        return repr(value[:limit]) + ("..." if len(value) > limit else "")
    if isinstance(value, (bool, int, float)) or value is None:
        return repr(value)[:limit]
    return f"a JSON {_JSON_NAMES.get(type(value), type(value).__name__)}"


_JSON_NAMES = {list: "array", dict: "object"}


def bytes_excerpt(payload: bytes, limit: int = const.EXCERPT_CHARS) -> str:
    """The first ``limit`` bytes of a raw payload, for a log line.

    >>> bytes_excerpt(b"[" * 1000, 5)
    "'[[[[['... (1000 bytes)"
    """
    text = payload[:limit].decode("utf-8", "replace")
    return repr(text) + (f"... ({len(payload)} bytes)" if len(payload) > limit else "")


def _dig(document: dict[str, Any], path: str) -> Any:
    node: Any = document
    for key in path.split("."):
        if not isinstance(node, dict) or key not in node:
            raise PayloadError(const.ERR_MISSING_FIELD, f"payload has no {path!r}")
        node = node[key]
    return node


def decode_telemetry(
    device_id: str,
    metric_from_topic: str | None,
    payload: bytes,
    config: PayloadConfig,
    received_at: float,
    source: str,
    on_rejected_metric: Callable[[PayloadError], None],
) -> list[Reading]:
    """Readings of one telemetry message.

    A metric with a value of the wrong type is rejected on its own
    (``on_rejected_metric``); the message's other metrics are kept.
    """
    try:
        document = orjson.loads(payload)
    except orjson.JSONDecodeError as error:
        raise PayloadError(const.ERR_INVALID_JSON, f"payload is not JSON: {error}") from None

    if metric_from_topic is not None:
        if isinstance(document, dict):
            timestamp = parse_timestamp(document.get(config.timestamp_field), received_at)
            if "value" not in document:
                raise PayloadError(const.ERR_MISSING_FIELD, "payload has no 'value'")
            raw_value = document["value"]
        else:
            timestamp, raw_value = received_at, document
        value, quality = _metric_value(metric_from_topic, raw_value)
        return [_mapped(Reading(device_id, metric_from_topic, value, timestamp, quality, source), config)]

    if isinstance(document, dict) and config.batch_path:
        document = _dig(document, config.batch_path)
    if isinstance(document, list):
        # A batch of timestamped readings, e.g. a device catching up after a network outage.
        for index, item in enumerate(document):
            if not isinstance(item, dict):
                raise PayloadError(
                    const.ERR_NOT_AN_OBJECT, f"batch item {index} is a JSON {type(item).__name__}, expected an object"
                )
        if not document:
            raise PayloadError(const.ERR_MISSING_FIELD, "payload is an empty batch")
        readings: list[Reading] = []
        for item in document:
            readings += _object_readings(device_id, item, config, received_at, source, on_rejected_metric)
        return readings
    if not isinstance(document, dict):
        raise PayloadError(
            const.ERR_NOT_AN_OBJECT, f"payload is a JSON {type(document).__name__}, expected an object"
        )
    return _object_readings(device_id, document, config, received_at, source, on_rejected_metric)


def _object_readings(
    device_id: str, document: dict[str, Any], config: PayloadConfig, received_at: float, source: str,
    on_rejected_metric: Callable[[PayloadError], None],
) -> list[Reading]:
    timestamp = parse_timestamp(document.get(config.timestamp_field), received_at)
    if config.metrics_path:
        metrics = _dig(document, config.metrics_path)
        if not isinstance(metrics, dict):
            raise PayloadError(const.ERR_WRONG_TYPE, f"{config.metrics_path!r} is not an object")
    else:
        skip = {config.timestamp_field, *config.ignore}
        metrics = {key: value for key, value in document.items() if key not in skip}
    if not metrics:
        raise PayloadError(const.ERR_MISSING_FIELD, "payload carries no metrics")

    readings: list[Reading] = []
    mappings = config.metrics
    for name, raw in metrics.items():
        kind = type(raw)
        # Plain numbers with short names, nearly every metric of every message, take the short way.
        if (kind is float or kind is int) and len(name) <= const.MAX_METRIC_NAME_CHARS:
            value = float(raw)
            quality = Quality.GOOD if math.isfinite(value) else Quality.BAD
        else:
            try:
                if len(name) > const.MAX_METRIC_NAME_CHARS:
                    raise PayloadError(const.ERR_BAD_METRIC_NAME, f"metric name {excerpt(name)} is longer than "
                                                                  f"{const.MAX_METRIC_NAME_CHARS} characters")
                value, quality = _metric_value(name, raw)
            except PayloadError as error:
                on_rejected_metric(error)
                continue
        reading = Reading(device_id, name, value, timestamp, quality, source)
        readings.append(_mapped(reading, config) if name in mappings else reading)
    return readings


def _mapped(reading: Reading, config: PayloadConfig) -> Reading:
    """Rename, scale and offset a metric as ``payload.metrics`` says (raw x scale + offset)."""
    mapping = config.metrics.get(reading.metric)
    if mapping is None:
        return reading
    reading.metric = mapping.name or reading.metric
    reading.value = reading.value * mapping.scale + mapping.offset
    return reading


_SEVERITIES = {severity.value: severity for severity in Severity}


def decode_alarm(device_id: str, payload: bytes, received_at: float, source: str) -> Alarm:
    """``{"code": "OHE", "severity": "high", "message": "...", "active": true, "ts": ...}``."""
    try:
        document = orjson.loads(payload)
    except orjson.JSONDecodeError as error:
        raise PayloadError(const.ERR_INVALID_JSON, f"alarm payload is not JSON: {error}") from None
    if not isinstance(document, dict):
        raise PayloadError(const.ERR_NOT_AN_OBJECT, "alarm payload must be a JSON object")
    code = document.get("code")
    if not isinstance(code, str) or not code.strip():
        raise PayloadError(const.ERR_MISSING_FIELD, "alarm payload needs a non-empty string 'code'")
    if len(code) > const.MAX_ALARM_CODE_CHARS:
        raise PayloadError(const.ERR_WRONG_TYPE, f"alarm code {excerpt(code)} is longer than "
                                                 f"{const.MAX_ALARM_CODE_CHARS} characters")
    severity = document.get("severity", "medium")
    if not isinstance(severity, str) or severity.lower() not in _SEVERITIES:
        raise PayloadError(
            const.ERR_WRONG_TYPE,
            f"alarm severity {excerpt(severity)} is not one of {', '.join(_SEVERITIES)}",
        )
    message = document.get("message", "")
    if not isinstance(message, str):
        raise PayloadError(const.ERR_WRONG_TYPE, f"alarm message is {excerpt(message)}, expected a string")
    active = document.get("active", True)
    if not isinstance(active, bool):
        raise PayloadError(const.ERR_WRONG_TYPE, "alarm 'active' must be true or false")
    return Alarm(
        device_id=device_id,
        raised_at=parse_timestamp(document.get("ts"), received_at),
        code=code.strip().upper(),
        severity=_SEVERITIES[severity.lower()],
        message=message[:const.MAX_ALARM_MESSAGE_CHARS],
        active=active,
        source=source,
    )
