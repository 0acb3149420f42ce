"""Detectors on simulated physics with known faults, bad values and chattering signals."""

from __future__ import annotations

import math
import random

import pytest

from detectors.adaptive import AdaptiveBaseline
from detectors.config import DetectorConfig, LimitRuleConfig
from detectors import checkpoint
from detectors.residual import ResidualRegression
from detectors.robust import RobustBaseline
from detectors.engine import (
    FORECAST_DETECTOR, MODELS, RATE_DETECTOR, RESYNC_AFTER, STATE_LAYOUT, STUCK_DETECTOR, DetectorEngine,
    models_version,
)
from gateway.core import Quality, Reading, Severity
from simulators.physics import DeviceModel, DeviceSpec, Fault

ONSET = 2400.0
DURATION = 900.0


def run(device_type: str, seed: int, fault: str | None, seconds: float, interval: float = 1.0,
        onset: float = ONSET, duration: float = DURATION, **config) -> list:
    engine = DetectorEngine(DetectorConfig(**config), {"d": device_type})
    device = DeviceModel(DeviceSpec("d", device_type, "site"), seed=seed)
    if fault:
        device.inject(Fault("d", fault, onset=onset, duration=duration))
    anomalies = []
    for step in range(int(seconds / interval)):
        t = step * interval
        batch = [Reading("d", metric, value, t) for metric, value in device.step(t).items()]
        anomalies += engine.process(batch)
    return anomalies


SPREAD_MODELS = ["robust_baseline", "residual_regression"]


@pytest.mark.parametrize("model", SPREAD_MODELS)
@pytest.mark.parametrize("device_type", ["pump", "motor", "compressor"])
@pytest.mark.parametrize("seed", [1000, 1001])
def test_healthy_devices_stay_quiet(device_type: str, seed: int, model: str) -> None:
    assert run(device_type, seed, None, 4000, model={"type": model}) == []


@pytest.mark.parametrize("model", SPREAD_MODELS)
@pytest.mark.parametrize("device_type", ["pump", "motor", "compressor"])
@pytest.mark.parametrize("fault", ["bearing_wear", "overheating", "cavitation"])
def test_model_catches_each_fault_before_failure_without_limit_rules(device_type: str, fault: str,
                                                                     model: str) -> None:
    anomalies = run(device_type, 1000, fault, int(ONSET + DURATION), rules=[], model={"type": model})
    assert anomalies, f"{fault} on a {device_type} was not detected before its failure point"
    first = anomalies[0]
    assert ONSET < first.detected_at < ONSET + DURATION
    assert first.detector == MODELS[model].version
    assert first.evidence and first.metrics


def test_each_device_type_gets_the_model_configured_for_it() -> None:
    config = DetectorConfig(device_type_models={"motor": {"type": "residual_regression"}})
    engine = DetectorEngine(config, {"p": "pump", "m": "motor"})
    engine.process([Reading("p", "flow", 80.0, 0.0), Reading("m", "speed", 1480.0, 0.0)])
    assert isinstance(engine.devices["p"].model, AdaptiveBaseline)
    assert isinstance(engine.devices["m"].model, ResidualRegression)
    # A checkpoint written under one assignment of models is not loaded under another.
    assert models_version(config) == "adaptive-baseline-3,motor=residual-regression-1"
    assert models_version(DetectorConfig()) == "adaptive-baseline-3"


def test_a_load_change_moving_coupled_metrics_together_is_not_an_anomaly() -> None:
    rng = random.Random(1)
    model = RobustBaseline()

    def pump(load: float, pressure_loss: float = 0.0) -> dict[str, float]:
        return {"flow": 130 * load + rng.gauss(0, 0.5), "vibration": 2.0 + rng.gauss(0, 0.1),
                "pressure": 1.5 + 4.5 * load**2 + rng.gauss(0, 0.01) - pressure_loss}

    for t in range(600):
        x = pump(0.6 + 0.05 * math.sin(t / 30))
        model.score_one(x)
        model.learn_one(x)
    assert model.tracks["pressure"].partner is model.tracks["flow"]
    assert model.tracks["vibration"].partner is None
    # A set-point well above the warm-up's range: pressure is 3 spreads up, but its flow says why.
    scores = [model.score_one(pump(0.72)) for _ in range(300)]
    assert model.tracks["pressure"].smoothed > 2.5 and max(scores) < 1.0
    for t in range(300):
        model.score_one(pump(0.6 + 0.05 * math.sin(t / 30)))
    # Pressure lost at the same flow (a worn impeller, a leak): the flow does not explain it.
    for t in range(100):
        score = model.score_one(pump(0.6 + 0.05 * math.sin(t / 30), pressure_loss=1.0))
    shares = model.contributions()
    assert score > 4 and max(shares, key=lambda name: abs(shares[name])) == "pressure" and shares["pressure"] < 0


STEADY_PROCESS = {"type": "robust_baseline", "scale_samples": 200, "calibration_samples": 200,
                  "min_threshold": 4.0, "margin": 1.5}


def steady_pump_anomalies(model: dict, flow_step: float, seed: int) -> list:
    """A quiet flow and a water temperature that wanders 5 of its spreads; the flow steps down at t=1500."""
    engine = DetectorEngine(DetectorConfig(warmup_samples=400, rules=[], model=model), {"d": "loop_pump"})
    rng = random.Random(seed)
    anomalies = []
    for t in range(2000):
        flow = 32.0 + rng.gauss(0, 0.1) - (flow_step if t >= 1500 else 0.0)
        temperature = 60.0 + rng.gauss(0, 0.3) + 1.5 * math.sin(2 * math.pi * t / 700)
        anomalies += engine.process([Reading("d", "flow", flow, float(t)),
                                     Reading("d", "temperature", temperature, float(t))])
    return anomalies


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_each_metric_in_its_own_variation_catches_a_small_step_of_a_quiet_metric(seed: int) -> None:
    shared = {"type": "robust_baseline"}
    # Healthy: the wandering temperature alerts no way.
    for model in (STEADY_PROCESS, shared, {}):
        assert steady_pump_anomalies(model, 0.0, seed) == []
    # A 3.5-spread step of the flow: the shared threshold (set by the temperature) misses it,
    # the flow's own unit does not, nor does the default (every metric and channel in its own unit).
    assert steady_pump_anomalies(shared, 0.35, seed) == []
    for model in (STEADY_PROCESS, {}):
        calibrated = steady_pump_anomalies(model, 0.35, seed)
        assert [a.metrics[0] for a in calibrated] == ["flow"] and 1500 < calibrated[0].detected_at < 1560


def test_a_model_learning_past_the_warm_up_is_refused() -> None:
    with pytest.raises(ValueError, match="device_type_models.loop_pump: scale_samples \\+ calibration_samples "
                                         "\\(2200\\) must fit in warmup_samples \\(1800\\)"):
        DetectorConfig(device_type_models={"loop_pump": {"type": "robust_baseline", "scale_samples": 200,
                                                         "calibration_samples": 2000}})
    engine = DetectorEngine(DetectorConfig(device_type_models={"loop_pump": STEADY_PROCESS}), {"d": "loop_pump"})
    engine.process([Reading("d", "flow", 32.0, 0.0)])
    assert engine.devices["d"].gate.margin == 1.5 and engine.devices["d"].gate.floor == 4.0


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_pump_cavitating_over_a_day_is_caught_early_by_its_partners_drifting_apart(seed: int) -> None:
    # Flow falls and pressure sags so slowly that each metric's level follows them; the relation between
    # the pump's partners (flow, current, pressure) does not follow, so the fault shows within its first
    # third. Before relations had tracks of their own, such faults went unnoticed to the failure point.
    # Without limit rules (so no forecasts either): the model alone raises.
    onset, duration = 12 * 3600.0, 24 * 3600.0
    anomalies = run("pump", seed, "cavitation", onset + duration, interval=10.0, onset=onset, duration=duration,
                    rules=[])
    assert anomalies, "a day-long cavitation went unnoticed to its failure point"
    first = anomalies[0]
    assert onset < first.detected_at < onset + duration / 3, (first.detected_at - onset) / duration
    assert {"flow", "pressure", "motor_current"} & set(first.metrics)


@pytest.mark.parametrize("device_type", ["pump", "compressor"])
@pytest.mark.parametrize("seed", [1, 2])
def test_partners_relations_stay_quiet_over_days_of_healthy_load_changes(device_type: str, seed: int) -> None:
    # The operators move the set-point across the whole load range over three days, beyond what the
    # warm-up saw (the relations' range and curve are in Pair's doctest).
    assert run(device_type, seed, None, 72 * 3600.0, interval=10.0, rules=[]) == []


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
    assert engine.degraded("d") and engine.summaries()["d"][2]
    assert engine.diagnostics()["rejected_by_device"]["d"]["out_of_order"]["count"] == 1


def test_a_reading_from_the_future_or_a_clock_set_back_never_stops_scoring_a_device() -> None:
    engine = DetectorEngine(DetectorConfig(warmup_samples=100, checkpoint_path=None), {"d": "meter"})
    rng = random.Random(4)
    for t in range(300):
        engine.process([Reading("d", "level", 50 + rng.gauss(0, 1), 1e9 + t)])
    # One reading stamped an hour ahead (a device clock error within what ingest lets through), then the
    # device's clock goes on as before: a few readings are refused, then scoring follows the device's clock.
    engine.process([Reading("d", "level", 50.0, 1e9 + 3900)])
    scored = engine.samples
    found = []
    for t in range(300, 400):
        value = 56.5 if t == 380 else 50 + rng.gauss(0, 1)
        found += engine.process([Reading("d", "level", value, 1e9 + t)])
    assert engine.rejected["out_of_order"] == RESYNC_AFTER - 1
    assert engine.samples == scored + 100 - (RESYNC_AFTER - 1)
    assert [a.detected_at for a in found] == [1e9 + 380]  # the spike after the resync is caught
    status = engine.device_status("d")
    assert status["degraded"] and set(status["rejected"]) == {"out_of_order", "clock_reset"}


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


def test_a_slow_drift_is_forecast_before_the_limit_is_crossed() -> None:
    config = DetectorConfig(warmup_samples=1300)  # one whole load cycle: the normal range
    engine = DetectorEngine(config, {"pump-1": "pump"})
    found = []
    for t in range(3000):
        # Healthy: a load swing (up to 0.02 C/s); from t = 1500 the bearing heats up by 0.05 C/s.
        temperature = 55 + 4 * math.sin(t / 200) + (0.05 * (t - 1500) if t > 1500 else 0.0)
        found += engine.process([Reading("pump-1", "bearing_temp", temperature, float(t))])
    forecasts = [a for a in found if a.detector == FORECAST_DETECTOR]
    limits = [a for a in found if a.detector == "limit"]
    assert len(forecasts) == 1 and limits  # one forecast, then the limit itself
    forecast = forecasts[0]
    crossing = 1500 + (90 - 55) / 0.05  # t = 2200, give or take the swing
    assert 1500 < forecast.detected_at < limits[0].detected_at
    assert forecast.due_at is not None and abs(forecast.due_at - crossing) < 600
    assert (forecast.failure_mode, forecast.metrics) == ("OHE", ["bearing_temp"])
    assert "will cross 90" in forecast.message
    assert [a for a in found if a.detected_at < 1500] == []  # nothing on the healthy swing


def test_checkpoint_round_trip_continues_without_a_new_warm_up(tmp_path) -> None:
    path = tmp_path / "detectors.ckpt"
    config = DetectorConfig(warmup_samples=300)

    def sample(t: int) -> list[Reading]:
        load = 0.6 + 0.1 * math.sin(t / 40)
        return [Reading("pump-1", "motor_current", 18 + 32 * load, float(t)),
                Reading("pump-1", "vibration", 1.6 + 0.9 * load, float(t))]

    first = DetectorEngine(config, {"pump-1": "pump"}, path)
    for t in range(400):
        first.process(sample(t))
    assert first.diagnostics()["warming_up"] == 0
    first.close()  # shutdown writes the checkpoint
    assert path.exists() and first.diagnostics()["checkpoints"] == 1

    again = DetectorEngine(config, {"pump-1": "pump"}, path)
    assert again.diagnostics()["warming_up"] == 0 and again.diagnostics()["devices"] == 1
    # It goes on from where it was: a fault right after the restart is caught, no warm-up first.
    found = []
    for t in range(400, 420):
        readings = sample(t)
        readings[1].value += 3.0  # vibration jumps at the same load
        found += again.process(readings)
    assert any(a.detector == MODELS["adaptive_baseline"].version for a in found), found

    # Another format version is set aside, never loaded into code that does not match it.
    checkpoint.save(path, "robust-baseline-0", STATE_LAYOUT, again.devices)
    assert DetectorEngine(config, {"pump-1": "pump"}, path).diagnostics()["devices"] == 0
    checkpoint.save(path, models_version(config), ["device_type", "model"], again.devices)  # an older layout
    assert DetectorEngine(config, {"pump-1": "pump"}, path).diagnostics()["devices"] == 0
    path.write_bytes(b"not a pickle")
    assert DetectorEngine(config, {"pump-1": "pump"}, path).diagnostics()["devices"] == 0


def test_a_stuck_sensor_is_an_instrument_finding_and_a_moving_one_is_not() -> None:
    config = DetectorConfig(warmup_samples=100, stuck={"samples": 30}, forecast={"enabled": False})
    engine = DetectorEngine(config, {"pump-1": "pump"})
    found = []
    for t in range(400):
        flow = 80 + 5 * math.sin(t / 7) if t < 200 else 81.25  # the transmitter freezes at t = 200
        found += engine.process([Reading("pump-1", "flow", flow, float(t))])
    stuck = [a for a in found if a.detector == STUCK_DETECTOR]
    assert len(stuck) == 1 and stuck[0].detected_at == 200 + 29
    assert (stuck[0].failure_mode, stuck[0].failure_mechanism, stuck[0].severity) == ("AIR", "3.3 faulty signal",
                                                                                        Severity.LOW)
    assert "flow stuck at 81.25" in stuck[0].message
    # A set-point that never moved, even in warm-up, is not a stuck sensor.
    constant = DetectorEngine(config, {"pump-1": "pump"})
    assert [a for t in range(400) for a in constant.process([Reading("pump-1", "speed", 1480.0, float(t))])
            if a.detector == STUCK_DETECTOR] == []


def test_rate_of_change_rules() -> None:
    rule = {"device_type": "pump", "metric": "pressure", "max_per_s": 0.5, "on_delay": 2, "failure_mode": "ELU"}
    config = DetectorConfig(warmup_samples=10_000, rate_rules=[rule], forecast={"enabled": False})
    engine = DetectorEngine(config, {"pump-1": "pump"})
    pressures = [4.0] * 10 + [3.0, 2.0, 1.0, 0.5] + [0.5] * 20 + [1.5, 2.5, 3.5]  # a burst pipe, then a refill
    found = [a for t, p in enumerate(pressures) for a in engine.process([Reading("pump-1", "pressure", p, float(t))])]
    rates = [a for a in found if a.detector == RATE_DETECTOR]
    assert [(a.detected_at, a.failure_mode) for a in rates] == [(11.0, "ELU"), (35.0, "ELU")]
    assert rates[0].message == "pressure changing at -1/s, limit 0.5/s"


def test_sensor_drift_is_told_from_a_machine_that_changed_state() -> None:
    import random

    rng = random.Random(5)
    config = DetectorConfig(warmup_samples=600, forecast={"enabled": False}, stuck={"enabled": False},
                            drift={"enabled": True}, model={"type": "residual_regression"})
    engine = DetectorEngine(config, {"pump-1": "pump"})
    found = []
    for t in range(2400):
        load = 0.6 + 0.15 * math.sin(t / 90) + (0.1 if t > 1200 else 0.0)  # the operator raises the set-point
        flow_offset = 6.0 if t > 1800 else 0.0  # ...and later the flow transmitter starts reading high
        sample = {"motor_current": 18 + 32 * load + rng.gauss(0, 0.3), "flow": 130 * load + rng.gauss(0, 1.2)
                  + flow_offset, "pressure": 1.5 + 4.5 * load ** 2 + rng.gauss(0, 0.04)}
        found += engine.process([Reading("pump-1", m, v, float(t)) for m, v in sample.items()])
    drifts = [a for a in found if a.detector == "sensor-drift-1"]
    assert [(a.metrics, a.failure_mode, a.failure_mechanism) for a in drifts] == [
        (["flow"], "AIR", "3.4 out of adjustment")]
    assert 1800 < drifts[0].detected_at < 2000 and "flow sensor drifting high" in drifts[0].message
