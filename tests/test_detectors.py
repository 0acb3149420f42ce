"""Detectors on simulated physics with known faults, bad values and chattering signals."""

from __future__ import annotations

import math

import pytest

from detectors.config import DetectorConfig, LimitRuleConfig
from detectors.engine import DetectorEngine
from gateway.core import Quality, Reading
from simulators.physics import DeviceModel, DeviceSpec, Fault

ONSET = 2400.0
DURATION = 900.0


def run(device_type: str, seed: int, fault: str | None, seconds: int, **config) -> list:
    engine = DetectorEngine(DetectorConfig(**config), {"d": device_type})
    device = DeviceModel(DeviceSpec("d", device_type, "site"), seed=seed)
    if fault:
        device.inject(Fault("d", fault, onset=ONSET, duration=DURATION))
    anomalies = []
    for t in range(seconds):
        batch = [Reading("d", metric, value, float(t)) for metric, value in device.step(float(t)).items()]
        anomalies += engine.process(batch)
    return anomalies


@pytest.mark.parametrize("device_type", ["pump", "motor", "compressor"])
@pytest.mark.parametrize("seed", [1000, 1001])
def test_healthy_devices_stay_quiet(device_type: str, seed: int) -> None:
    assert run(device_type, seed, None, 4000) == []


@pytest.mark.parametrize("device_type", ["pump", "motor", "compressor"])
@pytest.mark.parametrize("fault", ["bearing_wear", "overheating", "cavitation"])
def test_model_catches_each_fault_before_failure_without_limit_rules(device_type: str, fault: str) -> None:
    anomalies = run(device_type, 1000, fault, int(ONSET + DURATION), rules=[])
    assert anomalies, f"{fault} on a {device_type} was not detected before its failure point"
    first = anomalies[0]
    assert ONSET < first.detected_at < ONSET + DURATION
    assert first.detector == "residual-regression-1"
    assert first.evidence and first.metrics


def test_bearing_wear_anomaly_names_the_metrics_involved() -> None:
    first = run("pump", 1000, "bearing_wear", int(ONSET + DURATION), rules=[])[0]
    assert {"vibration", "bearing_temp"} & set(first.metrics)
    assert first.failure_mode in {"VIB", "OHE", "PDE"}


def test_bad_values_never_reach_the_model() -> None:
    engine = DetectorEngine(DetectorConfig(warmup_samples=50), {"d": "pump"})
    engine.process([Reading("d", "vibration", 2.0, 100.0)])
    before = engine.samples
    engine.process([
        Reading("d", "vibration", math.nan, 101.0),
        Reading("d", "vibration", math.inf, 102.0),
        Reading("d", "vibration", 9.0, 103.0, Quality.BAD),
        Reading("d", "vibration", 9.0, 104.0, Quality.UNCERTAIN),
        Reading("d", "vibration", 9.0, 50.0),  # older than what was scored
        Reading("x", "vibration", 9.0, 105.0),  # not a configured device
    ])
    assert engine.samples == before
    assert engine.devices["d"].features == {"vibration": 2.0}
    assert engine.rejected == {"not_good_quality": 4, "out_of_order": 1, "unknown_device": 1}


def test_chattering_around_a_limit_raises_one_alert() -> None:
    rule = LimitRuleConfig(device_type="*", metric="vibration", high=7.1, deadband=0.5, on_delay=3,
                           off_delay=10, failure_mode="VIB")
    engine = DetectorEngine(DetectorConfig(rules=[rule], warmup_samples=10_000), {"d": "pump"})
    values = [7.0 if t % 2 else 7.3 for t in range(20)] + [7.3] * 5 + [7.0, 7.2] * 20
    anomalies = [a for t, v in enumerate(values) for a in engine.process([Reading("d", "vibration", v, float(t))])]
    assert [a.detector for a in anomalies] == ["limit"]
    assert anomalies[0].message == "vibration 7.3 above limit 7.1 for 3 samples"


def test_limit_rule_clears_below_deadband_and_can_raise_again() -> None:
    rule = LimitRuleConfig(device_type="pump", metric="bearing_temp", high=90, deadband=3, on_delay=2,
                           off_delay=2, failure_mode="OHE")
    engine = DetectorEngine(DetectorConfig(rules=[rule], warmup_samples=10_000), {"d": "pump"})
    values = [91, 92, 88, 88, 86, 86, 95, 95]
    raised = [t for t, v in enumerate(values) for _ in engine.process([Reading("d", "bearing_temp", v, float(t))])]
    assert raised == [1, 7]
