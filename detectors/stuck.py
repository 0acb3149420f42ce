"""A stuck (flat-lining) sensor: the same value again and again from a signal that normally moves.

Healthy analogue signals carry noise; a value repeated ``samples`` times in a row (within
``tolerance``) from a stream that varied during warm-up is an instrument fault, not a calm
machine. Raised once per episode, cleared when the value moves again.

>>> stuck = StuckSensor(samples=5, tolerance=0.0, warmup=10)
>>> [stuck.update(v) for v in [1.0, 1.2, 0.9, 1.1, 1.0, 1.3, 0.8, 1.0, 1.1, 0.9]]  # warm-up: it moves
[None, None, None, None, None, None, None, None, None, None]
>>> [stuck.update(2.5) for _ in range(6)]
[None, None, None, None, 'raise', None]
>>> stuck.update(2.6)
'clear'
"""

from __future__ import annotations

from detectors.alerting import Edge
from detectors.hst import RunningStats


class StuckSensor:
    __slots__ = ("samples", "tolerance", "warmup", "healthy", "last", "repeats", "active")

    def __init__(self, samples: int, tolerance: float, warmup: int) -> None:
        self.samples = samples
        self.tolerance = tolerance
        self.warmup = warmup
        self.healthy = RunningStats()
        self.last: float | None = None
        self.repeats = 0
        self.active = False

    def update(self, value: float) -> Edge:
        same = self.last is not None and abs(value - self.last) <= self.tolerance
        self.last = value
        if self.healthy.count < self.warmup:
            self.healthy.update(value)
            return None
        self.repeats = self.repeats + 1 if same else 1
        if self.active and not same:
            self.active = False
            return "clear"
        # A signal that never moved while healthy (a set-point, a counter) is not stuck.
        if not self.active and self.repeats >= self.samples and self.healthy.std > self.tolerance:
            self.active = True
            return "raise"
        return None
