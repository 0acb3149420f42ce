"""The evaluation's own arithmetic: what counts as a caught fault, a false work order, F1/FAR/MAR."""

from __future__ import annotations

import math
import random
import statistics

import pytest

from bench.evaluate import RollingZScore, scores
from bench.scenarios import Finding, judge
from simulators.physics import Fault


def test_findings_become_true_and_false_work_orders() -> None:
    faults = [Fault("pump-1", "bearing_wear", onset=10_000.0, duration=10_000.0)]
    findings = [
        Finding("pump-1", 1000.0, "model"),  # before the onset: false
        Finding("pump-1", 15_000.0, "model"),  # over an hour after the last one: a new order, true, caught half-way
        Finding("pump-1", 16_000.0, "limit"),  # within the hour: the same order
        Finding("fan-2", 100.0, "forecast"),  # a healthy device: false...
        Finding("fan-2", 200.0, "forecast"),  # ...once
    ]
    result = judge(findings, faults, seed=1, device_days=2.0)
    assert (result.caught, result.delays, result.missed) == (1, [0.5], [])
    assert result.true_orders == 1 and result.false_by_detector == {"model": 1, "forecast": 1}
    late = judge([Finding("pump-1", 25_000.0, "model")], faults, seed=1, device_days=2.0)
    assert late.caught == 0 and late.true_orders == 1  # after the failure point: a true order, not a catch


def test_f1_far_mar_of_pooled_predictions() -> None:
    f1, far, mar = scores([1, 1, 0, 0, 1, 0], [1, 0, 0, 1, 1, 0])
    assert f1 == pytest.approx(2 / 3) and far == pytest.approx(1 / 3) and mar == pytest.approx(1 / 3)


def test_rolling_z_score_matches_its_definition() -> None:
    rng = random.Random(3)
    model = RollingZScore(window=50)
    history: list[float] = []
    for _ in range(300):
        value = 1000.0 + rng.gauss(0, 2)
        if len(history) >= 2:
            window = history[-50:]
            expected = abs(value - statistics.fmean(window)) / statistics.stdev(window)
            assert model.score_one({"x": value}) == pytest.approx(expected, rel=1e-6)
        model.learn_one({"x": value})
        history.append(value)
    assert math.isfinite(model.score_one({"x": 1e6}))
