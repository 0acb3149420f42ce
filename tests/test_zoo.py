"""The default detectors on streams nobody here tuned them for: the zoo's targets, each as a test.

Every stream goes through a whole ``DetectorEngine`` with the **default** configuration, as the
pipeline drives it (``bench.zoo.engine_runner``); ``python -m bench.zoo`` prints the whole table.
"""

from __future__ import annotations

import pytest

from bench.zoo import Outcome, default_config, engine_runner, healthy_streams
from detectors.config import DetectorConfig
from detectors.engine import DetectorEngine
from gateway.core import Reading
from simulators import zoo

INTERVALS = [1.0, 300.0]
run = engine_runner(default_config())


def first_finding(stream: zoo.Stream) -> int | None:
    """Samples from the first window's start to the first finding in it (None: missed)."""
    return Outcome(stream, run(stream)).detections()[0]


@pytest.mark.parametrize("interval", INTERVALS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_one_sample_spike_of_six_sigma_is_alerted_at_that_sample(interval: float, seed: int) -> None:
    stream = zoo.spike(interval, width=1, size=6.0, seed=seed)
    outcome = Outcome(stream, run(stream))
    assert stream.anomalies[0][0] in outcome.raised and outcome.false_alerts() == 0


@pytest.mark.parametrize("interval", INTERVALS)
@pytest.mark.parametrize("size", [3.0, -3.0])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_three_sigma_level_shift_is_alerted_within_five_samples(interval: float, size: float, seed: int) -> None:
    delay = first_finding(zoo.level_shift(interval, size, seed))
    assert delay is not None and delay < 5


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_missing_daily_peak_is_alerted_within_that_peak(seed: int) -> None:
    stream = zoo.missing_peak(300.0, seed=seed)
    start, end = stream.anomalies[0]
    outcome = Outcome(stream, run(stream))
    assert any(start <= i < end for i in outcome.raised) and outcome.false_alerts() == 0


@pytest.mark.parametrize("make", [zoo.phase_shift, zoo.flattened_cycle])
def test_other_changes_of_the_daily_pattern_are_alerted_in_the_changed_day(make) -> None:
    stream = make(300.0, seed=0)
    start, end = stream.anomalies[0]
    assert any(start <= i < end for i in run(stream))


@pytest.mark.parametrize("interval", INTERVALS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_second_fault_fifty_samples_after_the_first_is_raised(interval: float, seed: int) -> None:
    stream = zoo.second_fault(interval, gap=50, seed=seed)
    assert None not in Outcome(stream, run(stream)).detections()


@pytest.mark.parametrize("interval", INTERVALS)
@pytest.mark.parametrize("make", [zoo.constant_start, zoo.quantised_start, zoo.irregular])
def test_a_constant_quantised_or_irregular_start_does_not_blind_the_stream(interval: float, make) -> None:
    stream = make(interval, seed=0)
    outcome = Outcome(stream, run(stream))
    delay = outcome.detections()[0]
    assert delay is not None and delay < 10 and outcome.false_alerts() == 0


@pytest.mark.parametrize("interval", INTERVALS)
@pytest.mark.parametrize("make", [zoo.variance_change, zoo.trend_onset, zoo.stuck, zoo.drift])
def test_variance_changes_trends_and_failing_sensors_are_found(interval: float, make) -> None:
    stream = make(interval, seed=0)
    outcome = Outcome(stream, run(stream))
    assert outcome.detections()[0] is not None and outcome.false_alerts() == 0


def test_fewer_than_one_false_alert_per_hundred_thousand_healthy_samples() -> None:
    # White and autocorrelated noise at 1 s, white noise and a daily cycle at 5 min: 400,000 samples.
    streams = healthy_streams(100_000, seed=7)
    samples = sum(len(s.values) for s in streams)
    false = sum(Outcome(s, run(s)).false_alerts() for s in streams)
    assert samples >= 399_000 and false < samples / 100_000


def test_warm_up_ends_by_samples_or_time_whichever_comes_first() -> None:
    config = DetectorConfig(checkpoint_path=None)
    for interval, expected in ((1.0, config.warmup_samples), (300.0, int(config.warmup_s / 300) + 1)):
        engine = DetectorEngine(config, {"m": "meter"})
        t = 0
        while engine.devices.get("m") is None or engine.devices["m"].gate.warming_up:
            engine.process([Reading("m", "value", 50.0 + (t % 7) * 0.1, 1e9 + t * interval)])
            t += 1
        assert t == expected
