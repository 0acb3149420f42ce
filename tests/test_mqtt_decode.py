"""Topic templates and payload decoding, without a broker."""

from __future__ import annotations

import math

import pytest

from connectors.mqtt.decode import PayloadError, TopicTemplate, decode_alarm, decode_telemetry, parse_timestamp
from connectors.mqtt.schema import PayloadConfig
from gateway.core import Quality, Severity

NOW = 1_764_043_200.0


def decode(payload: bytes, metric: str | None = None, config: PayloadConfig | None = None):
    rejected: list[PayloadError] = []
    readings = decode_telemetry("pump-01", metric, payload, config or PayloadConfig(), NOW, "src", rejected.append)
    return readings, [error.reason for error in rejected]


def test_topic_template_subscription_and_match() -> None:
    template = TopicTemplate.parse("plant/{site}/{device}/telemetry")
    assert template.subscription == "plant/+/+/telemetry"
    assert template.match("plant/north/pump-01/telemetry") == {"site": "north", "device": "pump-01"}
    assert template.match("plant/north/pump-01/alarm") is None
    assert TopicTemplate.parse("site/{device}/#").match("site/m1/a/b") == {"device": "m1"}


def test_flat_payload_uses_every_number_but_timestamp_and_ignored() -> None:
    readings, rejected = decode(b'{"ts": 1764043100, "seq": 4, "vibration": 2.5, "running": true}')
    assert {(r.metric, r.value) for r in readings} == {("vibration", 2.5), ("running", 1.0)}
    assert all(r.timestamp == 1764043100 and r.source == "src" for r in readings)
    assert rejected == []


def test_nested_metrics_path_and_millisecond_timestamp() -> None:
    readings, _ = decode(b'{"ts": 1764043100500, "data": {"m": {"flow": 80}}}',
                         config=PayloadConfig(metrics_path="data.m"))
    assert [(r.metric, r.value, r.timestamp) for r in readings] == [("flow", 80.0, 1764043100.5)]


def test_wrong_type_metric_is_rejected_alone() -> None:
    readings, rejected = decode(b'{"metrics": {"a": "high", "b": 1.5}}', config=PayloadConfig(metrics_path="metrics"))
    assert [(r.metric, r.value, r.timestamp) for r in readings] == [("b", 1.5, NOW)]
    assert rejected == ["wrong_type"]


def test_null_value_is_kept_as_bad_quality() -> None:
    [reading], _ = decode(b'{"temp": null}')
    assert reading.quality is Quality.BAD and math.isnan(reading.value)
    assert not reading.is_scorable()


@pytest.mark.parametrize(("payload", "reason"), [
    (b"{oops", "invalid_json"),
    (b"[1, 2]", "not_an_object"),
    (b'{"ts": 5}', "missing_field"),
    (b'{"ts": "noon", "a": 1}', "bad_timestamp"),
    (b'{"ts": "2026-11-25T10:00:00", "a": 1}', "bad_timestamp"),
])
def test_rejected_messages(payload: bytes, reason: str) -> None:
    with pytest.raises(PayloadError) as caught:
        decode(payload)
    assert caught.value.reason == reason


def test_metric_in_topic_accepts_bare_numbers() -> None:
    [reading], _ = decode(b"3.25", metric="pressure")
    assert (reading.metric, reading.value, reading.timestamp) == ("pressure", 3.25, NOW)
    [reading], _ = decode(b'{"value": 4, "ts": "2026-11-25T10:00:00Z"}', metric="pressure")
    assert reading.timestamp == parse_timestamp("2026-11-25T10:00:00+00:00", 0)


def test_alarm_decoding() -> None:
    alarm = decode_alarm("m1", b'{"code": "ohe", "severity": "CRITICAL", "message": "hot"}', NOW, "src")
    assert (alarm.code, alarm.severity, alarm.active, alarm.raised_at) == ("OHE", Severity.CRITICAL, True, NOW)
    with pytest.raises(PayloadError, match="severity 'loud'"):
        decode_alarm("m1", b'{"code": "X", "severity": "loud"}', NOW, "src")
    with pytest.raises(PayloadError, match="non-empty string 'code'"):
        decode_alarm("m1", b'{"code": ""}', NOW, "src")


def test_batches_of_timestamped_readings() -> None:
    config = PayloadConfig(metrics_path="metrics")
    readings, rejected = decode(b'[{"ts": 100, "metrics": {"flow": 1}}, {"ts": 101, "metrics": {"flow": 2, "p": "x"}}]',
                                config=config)
    assert [(r.metric, r.value, r.timestamp) for r in readings] == [("flow", 1.0, 100.0), ("flow", 2.0, 101.0)]
    assert rejected == ["wrong_type"]  # one bad metric of one item; the rest of the batch is kept
    nested, _ = decode(b'{"device": "x", "readings": [{"ts": 5, "metrics": {"flow": 3}}]}',
                       config=PayloadConfig(metrics_path="metrics", batch_path="readings"))
    assert [(r.value, r.timestamp) for r in nested] == [(3.0, 5.0)]
    with pytest.raises(PayloadError, match="batch item 1 is a JSON int, expected an object"):
        decode(b'[{"ts": 1, "flow": 2}, 7]')
    with pytest.raises(PayloadError, match="empty batch"):
        decode(b"[]")


def test_declared_metrics_are_renamed_scaled_and_offset() -> None:
    config = PayloadConfig(metrics={"temp_raw": {"name": "bearing_temp", "scale": 0.1, "offset": -40, "unit": "degC"}})
    readings, _ = decode(b'{"temp_raw": 950, "flow": 80}', config=config)
    assert sorted((r.metric, r.value) for r in readings) == [("bearing_temp", 55.0), ("flow", 80.0)]
    by_topic, _ = decode(b"950", metric="temp_raw", config=config)
    assert [(r.metric, r.value) for r in by_topic] == [("bearing_temp", 55.0)]
