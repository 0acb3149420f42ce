"""Sensor drift: one metric's residual shifts for good while the machine's other metrics agree.

The device model predicts each metric from the others; its per-metric surprise (residual in
units of its usual spread) is what :class:`SensorDrift` watches, with river's ADWIN per
metric. A process fault moves several metrics together (bearing wear: vibration, temperature,
current); a sensor going out of adjustment moves only its own reading against the rest. So a
lasting shift in exactly one metric's surprise is reported as drift of that sensor.

>>> import random
>>> rng = random.Random(3)
>>> watch = SensorDrift(delta=0.002, min_shift=1.0)
>>> found = []
>>> for i in range(3000):
...     offset = 2.0 if i > 1500 else 0.0  # the flow transmitter reads high from sample 1500
...     drifted = watch.update({"flow": rng.gauss(0, 1) + offset, "pressure": rng.gauss(0, 1)})
...     if drifted:
...         found.append((i, drifted[0]))
>>> [(metric) for i, metric in found], 1500 < found[0][0] < 1600
(['flow'], True)
"""

from __future__ import annotations

from river import drift

# The drifting metric's shift must be this many times the next largest.
DOMINANCE = 1.25
HOLD_SAMPLES = 30


class SensorDrift:
    def __init__(self, delta: float, min_shift: float) -> None:
        self.delta = delta
        self.min_shift = min_shift
        self.adwins: dict[str, drift.ADWIN] = {}
        self.reported: set[str] = set()
        self._leader: str | None = None
        self._lead = 0

    def update(self, surprises: dict[str, float]) -> tuple[str, float] | None:
        """Feed one sample's per-metric surprises; (metric, level) when one sensor stands out as drifted."""
        for metric, surprise in surprises.items():
            adwin = self.adwins.get(metric)
            if adwin is None:
                adwin = self.adwins[metric] = drift.ADWIN(delta=self.delta)
            adwin.update(surprise)
        # ADWIN's mean is over its window, which it cuts at a change: the level since then.
        levels = sorted(((abs(a.estimation), m) for m, a in self.adwins.items() if m in surprises), reverse=True)
        # A sensor back in adjustment (recalibrated, replaced) may drift again later.
        self.reported = {m for m in self.reported if abs(self.adwins[m].estimation) >= self.min_shift / 2}
        if len(levels) < 2:
            return None
        (top, metric), (second, _) = levels[0], levels[1]
        # The drifting sensor also misleads the predictions that use it, but less than its own;
        # the detectors cut their windows a few samples apart, so the lead must hold a while.
        if top < self.min_shift or top < DOMINANCE * second or metric in self.reported:
            self._leader, self._lead = None, 0
            return None
        self._lead = self._lead + 1 if metric == self._leader else 1
        self._leader = metric
        if self._lead < HOLD_SAMPLES:
            return None
        self.reported.add(metric)
        return metric, self.adwins[metric].estimation
