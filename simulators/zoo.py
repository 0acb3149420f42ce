"""A zoo of synthetic univariate streams with ground truth, at 1 s and 5 min intervals.

Each stream is noise of a known spread (``sigma``) around a level, optionally with a daily
cycle, and at most a few labelled anomalies: spikes of 1-5 samples, level shifts up and
down, variance changes, trend onsets, seasonal pattern changes (a missing peak, a phase
shift, a flattened cycle), stuck and drifting sensors, constant or quantised starts,
irregular sampling and gaps. ``anomalies`` are ``[start, end)`` sample indexes; ``healthy``
streams have none and measure false alerts.

The streams are the detectors' test and bench material (``tests/test_zoo.py``,
``python -m bench.zoo``): what a real plant or a server room sends, not what our own
machine simulator makes.

>>> stream = spike(interval_s=1.0, width=1, seed=3)
>>> len(stream.values), stream.anomalies
(4000, [(3000, 3001)])
>>> round((stream.values[3000] - LEVEL) / stream.sigma, 6)
6.0
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Callable

LEVEL = 50.0
SIGMA = 1.0
DAY = 86400.0
START = 1_767_225_600.0  # 2026-01-01 00:00 UTC: days start at midnight, as a real site's do


@dataclass
class Stream:
    name: str
    interval_s: float
    timestamps: list[float]
    values: list[float]
    sigma: float = SIGMA
    anomalies: list[tuple[int, int]] = field(default_factory=list)

    def label(self, index: int) -> bool:
        return any(start <= index < end for start, end in self.anomalies)


def _noise(n: int, rng: random.Random, phi: float = 0.0) -> list[float]:
    """Unit-variance noise, AR(1) with coefficient ``phi`` (0: white)."""
    innovation = math.sqrt(1 - phi * phi)
    values, last = [], rng.gauss(0, 1)
    for _ in range(n):
        last = phi * last + innovation * rng.gauss(0, 1)
        values.append(last)
    return values


def _base(name: str, interval_s: float, n: int, seed: int, phi: float = 0.0,
          cycle: Callable[[float], float] | None = None) -> Stream:
    rng = random.Random(seed)
    timestamps = [START + i * interval_s for i in range(n)]
    noise = _noise(n, rng, phi)
    values = [LEVEL + SIGMA * e + (cycle(t) if cycle else 0.0) for t, e in zip(timestamps, noise)]
    return Stream(name, interval_s, timestamps, values)


def daily_peak(t: float) -> float:
    """A working day's load: a broad peak of 8 sigma between 08:00 and 18:00, quiet at night."""
    hour = (t % DAY) / 3600
    return 8.0 * SIGMA * math.exp(-((hour - 13.0) / 3.0) ** 2)


# -- healthy streams (false alerts) ------------------------------------------------------------

def healthy(interval_s: float, n: int = 100_000, seed: int = 0, phi: float = 0.0) -> Stream:
    return _base(f"healthy{'-ar' if phi else ''}@{interval_s:g}s", interval_s, n, seed, phi)


def healthy_seasonal(interval_s: float = 300.0, days: int = 60, seed: int = 0) -> Stream:
    return _base(f"healthy-seasonal@{interval_s:g}s", interval_s, int(days * DAY / interval_s), seed,
                 cycle=daily_peak)


# -- faults ----------------------------------------------------------------------------------

def spike(interval_s: float, width: int = 1, size: float = 6.0, seed: int = 0, n: int = 4000,
          at: int = 3000) -> Stream:
    """``width`` samples at exactly ``size`` sigma above the level (not added to the noise)."""
    stream = _base(f"spike-{width}@{interval_s:g}s", interval_s, n, seed)
    for i in range(at, at + width):
        stream.values[i] = LEVEL + size * SIGMA
    stream.anomalies = [(at, at + width)]
    return stream


def level_shift(interval_s: float, size: float = 3.0, seed: int = 0, n: int = 4000, at: int = 3000) -> Stream:
    stream = _base(f"level-{'up' if size > 0 else 'down'}@{interval_s:g}s", interval_s, n, seed)
    for i in range(at, n):
        stream.values[i] += size * SIGMA
    stream.anomalies = [(at, n)]
    return stream


def variance_change(interval_s: float, factor: float = 3.0, seed: int = 0, n: int = 4000,
                    at: int = 3000) -> Stream:
    stream = _base(f"variance-x{factor:g}@{interval_s:g}s", interval_s, n, seed)
    for i in range(at, n):
        stream.values[i] = LEVEL + (stream.values[i] - LEVEL) * factor
    stream.anomalies = [(at, n)]
    return stream


def trend_onset(interval_s: float, slope: float = 0.05, seed: int = 0, n: int = 4000, at: int = 3000) -> Stream:
    """From ``at`` on, the level climbs ``slope`` sigma per sample."""
    stream = _base(f"trend@{interval_s:g}s", interval_s, n, seed)
    for i in range(at, n):
        stream.values[i] += slope * SIGMA * (i - at)
    stream.anomalies = [(at, n)]
    return stream


def stuck(interval_s: float, seed: int = 0, n: int = 5000, at: int = 3000) -> Stream:
    """The sensor repeats its last value from ``at`` on."""
    stream = _base(f"stuck@{interval_s:g}s", interval_s, n, seed)
    for i in range(at, n):
        stream.values[i] = stream.values[at - 1]
    stream.anomalies = [(at, n)]
    return stream


def drift(interval_s: float, slope: float = 0.01, seed: int = 0, n: int = 5000, at: int = 3000) -> Stream:
    """A sensor drifting slowly (``slope`` sigma per sample): the slow cousin of a trend onset."""
    stream = trend_onset(interval_s, slope, seed, n, at)
    stream.name = f"drift@{interval_s:g}s"
    return stream


def second_fault(interval_s: float, gap: int = 50, seed: int = 0, n: int = 4000, at: int = 3000) -> Stream:
    """A burst of 5 samples at 6 sigma, then a 3-sigma shift of 20 samples ``gap`` samples after it ended."""
    stream = _base(f"second-fault@{interval_s:g}s", interval_s, n, seed)
    for i in range(at, at + 5):
        stream.values[i] = LEVEL + 6 * SIGMA
    second = at + 5 + gap
    for i in range(second, second + 20):
        stream.values[i] += 3 * SIGMA
    stream.anomalies = [(at, at + 5), (second, second + 20)]
    return stream


def constant_start(interval_s: float, constant: int = 500, seed: int = 0, n: int = 5000, at: int = 4000) -> Stream:
    """Flat for ``constant`` samples (a machine still off), then normal, then a 3-sigma shift."""
    stream = level_shift(interval_s, 3.0, seed, n, at)
    stream.name = f"constant-start@{interval_s:g}s"
    for i in range(constant):
        stream.values[i] = LEVEL
    return stream


def quantised_start(interval_s: float, quantum: float = 2.0, samples: int = 500, seed: int = 0, n: int = 5000,
                    at: int = 4000) -> Stream:
    """Coarsely quantised readings (few distinct values) at first, then full resolution, then a shift."""
    stream = level_shift(interval_s, 3.0, seed, n, at)
    stream.name = f"quantised-start@{interval_s:g}s"
    for i in range(samples):
        stream.values[i] = round(stream.values[i] / quantum) * quantum
    return stream


def irregular(interval_s: float, seed: int = 0, n: int = 5000, at: int = 4000, gap_at: int = 2500,
              gap: int = 200) -> Stream:
    """Jittered intervals (+-40 %) and a gap of ``gap`` intervals, then a 3-sigma shift."""
    stream = level_shift(interval_s, 3.0, seed, n, at)
    stream.name = f"irregular@{interval_s:g}s"
    rng = random.Random(seed + 1)
    t, stamps = START, []
    for i in range(n):
        t += interval_s * (gap if i == gap_at else rng.uniform(0.6, 1.4))
        stamps.append(t)
    stream.timestamps = stamps
    return stream


def _seasonal_fault(name: str, interval_s: float, days: int, fault_day: int, seed: int,
                    faulty: Callable[[float], float]) -> Stream:
    """A daily cycle; on ``fault_day`` the cycle is ``faulty`` instead, labelled where it is a sigma or more off."""
    n = int(days * DAY / interval_s)
    stream = _base(f"{name}@{interval_s:g}s", interval_s, n, seed, cycle=daily_peak)
    begin, end = START + fault_day * DAY, START + (fault_day + 1) * DAY
    labelled = []
    for i, t in enumerate(stream.timestamps):
        if begin <= t < end:
            stream.values[i] += faulty(t) - daily_peak(t)
            if abs(faulty(t) - daily_peak(t)) >= SIGMA:
                labelled.append(i)
    stream.anomalies = [(labelled[0], labelled[-1] + 1)] if labelled else []
    return stream


def missing_peak(interval_s: float = 300.0, days: int = 10, fault_day: int = 8, seed: int = 0) -> Stream:
    return _seasonal_fault("missing-peak", interval_s, days, fault_day, seed, lambda t: 0.0)


def phase_shift(interval_s: float = 300.0, days: int = 10, fault_day: int = 8, seed: int = 0,
                hours: float = 3.0) -> Stream:
    return _seasonal_fault("phase-shift", interval_s, days, fault_day, seed, lambda t: daily_peak(t - hours * 3600))


def flattened_cycle(interval_s: float = 300.0, days: int = 10, fault_day: int = 8, seed: int = 0) -> Stream:
    return _seasonal_fault("flattened-cycle", interval_s, days, fault_day, seed, lambda t: 0.4 * daily_peak(t))


def faults(interval_s: float, seed: int = 0) -> list[Stream]:
    """Every fault stream of the zoo at one interval (the seasonal ones at 5 min only)."""
    streams = [spike(interval_s, width, seed=seed) for width in range(1, 6)]
    streams += [level_shift(interval_s, 3.0, seed), level_shift(interval_s, -3.0, seed),
                variance_change(interval_s, seed=seed), trend_onset(interval_s, seed=seed),
                stuck(interval_s, seed), drift(interval_s, seed=seed), second_fault(interval_s, seed=seed),
                constant_start(interval_s, seed=seed), quantised_start(interval_s, seed=seed),
                irregular(interval_s, seed)]
    if interval_s >= 60:
        streams += [missing_peak(interval_s, seed=seed), phase_shift(interval_s, seed=seed),
                    flattened_cycle(interval_s, seed=seed)]
    return streams
