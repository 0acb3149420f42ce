"""Fixed alarm limits with on-delay, deadband and off-delay.

>>> from detectors.config import LimitRuleConfig
>>> rule = LimitRule(LimitRuleConfig(device_type="pump", metric="vibration", high=7.1,
...                                  deadband=0.5, on_delay=2, off_delay=2, failure_mode="VIB"))
>>> [rule.update(v) for v in [6.0, 7.5, 7.6, 6.9, 6.5, 6.4]]
[None, None, 'raise', None, None, 'clear']
"""

from __future__ import annotations

from detectors.alerting import Edge, Persistence
from detectors.config import LimitRuleConfig


class LimitRule:
    __slots__ = ("config", "persistence", "last_direction")

    def __init__(self, config: LimitRuleConfig) -> None:
        self.config = config
        # On-delay is "on_delay consecutive samples": K of M with K = M.
        self.persistence = Persistence(config.on_delay, config.on_delay, config.off_delay)
        self.last_direction = "up"

    def _beyond(self, value: float) -> bool:
        high, low = self.config.high, self.config.low
        if high is not None and value > high:
            self.last_direction = "up"
            return True
        if low is not None and value < low:
            self.last_direction = "down"
            return True
        return False

    def _back_inside(self, value: float) -> bool:
        high, low, deadband = self.config.high, self.config.low, self.config.deadband
        below_high = high is None or value < high - deadband
        above_low = low is None or value > low + deadband
        return below_high and above_low

    def update(self, value: float) -> Edge:
        return self.persistence.update(on=self._beyond(value), clear=self._back_inside(value))

    @property
    def active(self) -> bool:
        return self.persistence.active

    def describe(self, value: float) -> str:
        limit = self.config.high if self.last_direction == "up" else self.config.low
        word = "above" if self.last_direction == "up" else "below"
        return f"{self.config.metric} {value:.3g} {word} limit {limit:g} for {self.config.on_delay} samples"
