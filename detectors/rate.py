"""Rate of change: a metric moving faster than physics allows for this machine (a step, a shock).

>>> rate = RateOfChange(max_per_s=0.5, on_delay=2, off_delay=3)
>>> [rate.update(t, v) for t, v in [(0, 1.0), (1, 1.2), (2, 3.0), (3, 5.0), (4, 5.1), (5, 5.1), (6, 5.0)]]
[None, None, None, 'raise', None, None, 'clear']
"""

from __future__ import annotations

from detectors.alerting import Edge, Persistence


class RateOfChange:
    def __init__(self, max_per_s: float, on_delay: int, off_delay: int) -> None:
        self.max_per_s = max_per_s
        self.persistence = Persistence(on_delay, on_delay, off_delay)
        self.previous: tuple[float, float] | None = None
        self.rate = 0.0

    def update(self, t: float, value: float) -> Edge:
        previous, self.previous = self.previous, (t, value)
        if previous is None or t <= previous[0]:
            return None
        self.rate = (value - previous[1]) / (t - previous[0])
        too_fast = abs(self.rate) > self.max_per_s
        return self.persistence.update(on=too_fast, clear=not too_fast)

    @property
    def active(self) -> bool:
        return self.persistence.active
