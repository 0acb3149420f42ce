"""Fuzzing the MQTT and Sparkplug decoders: whatever arrives, only a counted rejection comes out.

Any other exception escaping a decoder would end up as the connector's
``internal_error`` at best; here it fails the test.
"""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connectors.mqtt.decode import PayloadError, decode_alarm, decode_telemetry
from connectors.mqtt.schema import PayloadConfig
from connectors.mqtt.sparkplug.session import handle as handle_sparkplug

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=50),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=20), children, max_size=5),
    max_leaves=30,
)
CONFIGS = [PayloadConfig(), PayloadConfig(metrics_path="metrics"), PayloadConfig(batch_path="readings"),
           PayloadConfig(metrics_path="a.b", timestamp_field="time")]
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def payloads() -> st.SearchStrategy[bytes]:
    def dumped(value: object) -> bytes:
        # The standard library writes what orjson refuses to: integers past 64 bits, NaN, Infinity.
        return json.dumps(value).encode()

    structured = JSON.map(dumped)
    wrapped = st.builds(lambda ts, metrics: dumped({"ts": ts, "metrics": metrics}),
                        JSON, st.dictionaries(st.text(max_size=300), JSON, max_size=5))
    # Around the interpreter's recursion limit and orjson's nesting limit (1024) in particular.
    depths = st.sampled_from([900, 990, 1000, 1023, 1024, 1025]) | st.integers(1, 3000)
    deep = depths.map(lambda depth: b'{"metrics": {"v": ' + b"[" * depth + b"1" + b"]" * depth + b"}}")
    return st.binary(max_size=200) | structured | wrapped | deep


def decode_everything(payload: bytes, metric: str | None, config: PayloadConfig) -> None:
    rejected: list[PayloadError] = []
    try:
        readings = decode_telemetry("pump-01", metric, payload, config, 1e9, "fuzz", rejected.append)
        assert all(isinstance(r.value, float) and isinstance(r.timestamp, float) for r in readings)
    except PayloadError as error:
        assert error.reason and len(str(error)) < 1000
    assert all(len(str(error)) < 1000 for error in rejected)
    try:
        decode_alarm("pump-01", payload, 1e9, "fuzz")
    except PayloadError as error:
        assert error.reason and len(str(error)) < 1000


@FUZZ
@given(payloads(), st.sampled_from([None, "vibration"]), st.sampled_from(CONFIGS))
def test_no_exception_but_a_payload_error_escapes_the_json_decoders(
    payload: bytes, metric: str | None, config: PayloadConfig
) -> None:
    decode_everything(payload, metric, config)


@FUZZ
@given(st.binary(max_size=300), st.sampled_from(["NBIRTH", "DBIRTH", "NDATA", "DDATA", "NDEATH", "DDEATH", "STATE"]),
       st.sampled_from(["", "/pump-01"]))
def test_sparkplug_messages_of_random_bytes_are_counted_never_raised(payload: bytes, kind: str, device: str) -> None:
    nodes: dict = {}
    for topic in (f"spBv1.0/plant/NBIRTH/edge-1", f"spBv1.0/plant/{kind}/edge-1{device}"):
        outcome = handle_sparkplug(nodes, topic, payload, 1e9, "fuzz")
        assert all(isinstance(error, str) for error in outcome.errors)
