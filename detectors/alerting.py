"""From scores and conditions to alerts: warm-up, adaptive threshold, persistence, hysteresis.

Kept apart from the models (as river keeps ``QuantileFilter`` apart from its
detectors) so every model and rule gets the same alarm hygiene (ISA-18.2):

* on-delay: a condition counts only when it holds in K of the last M samples;
* off-delay with deadband: an alert clears only after the clear condition
  (e.g. value back below limit - deadband) held for ``clear_after`` samples;
* an alert is raised once per episode, on its rising edge.

>>> gate = Persistence(k=3, m=4, clear_after=2)
>>> [gate.update(on=v > 10, clear=v < 8) for v in [11, 5, 12, 13, 14, 9, 7, 7]]
[None, None, None, 'raise', None, None, None, 'clear']
"""

from __future__ import annotations

import math
from typing import Literal

from river import stats

Edge = Literal["raise", "clear"] | None

# A self-calibrated model learns only from samples scoring under this share of its limit: a
# slow drift scores just under the limit for a long time, and learning it would widen the
# spreads step by step until the drift is never reported.
LEARN_LIMIT = 0.85


class Persistence:
    __slots__ = ("k", "window", "mask", "clear_after", "active", "_clear_run")

    def __init__(self, k: int, m: int, clear_after: int) -> None:
        if not 1 <= k <= m:
            raise ValueError("persistence needs 1 <= k <= m")
        self.k = k
        # The last m conditions as the bits of one int (newest lowest): a few bytes, not a deque.
        self.window = 0
        self.mask = (1 << m) - 1
        self.clear_after = clear_after
        self.active = False
        self._clear_run = 0

    def update(self, on: bool, clear: bool) -> Edge:
        self.window = ((self.window << 1) | on) & self.mask
        if not self.active:
            if self.window.bit_count() >= self.k:
                self.active = True
                self._clear_run = 0
                return "raise"
            return None
        self._clear_run = self._clear_run + 1 if clear else 0
        if self._clear_run >= self.clear_after:
            self.active = False
            self.window = 0
            return "clear"
        return None


class AdaptiveThreshold:
    """Alert when a model's score stays above a high quantile of its own normal scores.

    The first ``warmup`` scores never alert; scores from the second half of the
    warm-up on (the first half is the model settling) calibrate the quantile,
    which then stays fixed. Letting it follow later scores would ratchet: a
    slowly developing fault feeds scores just under the bar, which raise the
    bar, and the fault is never reported. Only samples scoring under the
    quantile itself count as normal for the model to learn from, so the model
    does not learn a developing fault either.

    >>> gate = AdaptiveThreshold(warmup=100, quantile=0.99, margin=1.2, k=3, m=4, clear_after=5)
    >>> edges = [gate.update(0.3 + 0.01 * (i % 10)) for i in range(200)]
    >>> [e for e in edges if e]
    []
    >>> [gate.update(0.9) for _ in range(3)]
    [None, None, 'raise']
    """

    __slots__ = ("warmup", "warmup_s", "margin", "floor", "calibration", "normal_limit", "persistence", "seen",
                 "first_at", "last_at", "hold")

    def __init__(self, warmup: int, quantile: float, margin: float, k: int, m: int, clear_after: int,
                 floor: float = 0.0, warmup_s: float = math.inf, self_calibrated: bool = False,
                 hold: float = 1.0) -> None:
        self.warmup = warmup
        # Hysteresis: an active alert clears only under hold x the threshold.
        self.hold = hold
        self.warmup_s = warmup_s
        self.margin = margin
        self.floor = floor
        # A self-calibrated model's scores are already in units of its threshold: 1 is the limit.
        self.calibration: stats.Quantile | None = None if self_calibrated else stats.Quantile(quantile)
        # The calibrated quantile: the highest score still counted normal (none before calibration).
        self.normal_limit = LEARN_LIMIT if self_calibrated else float("inf")
        if self_calibrated:
            self.margin, self.floor = 1 / LEARN_LIMIT, 1.0
        self.persistence = Persistence(k, m, clear_after)
        self.seen = 0
        self.first_at = math.nan
        self.last_at = math.nan

    @property
    def warming_up(self) -> bool:
        """Until ``warmup`` samples or ``warmup_s`` seconds, whichever comes first."""
        return self.seen < self.warmup and not self.last_at - self.first_at >= self.warmup_s

    @property
    def threshold(self) -> float:
        return max(self.normal_limit * self.margin, self.floor)

    @property
    def active(self) -> bool:
        return self.persistence.active

    def update(self, score: float, at: float = math.nan) -> Edge:
        self.seen += 1
        if math.isnan(self.first_at):
            self.first_at = at
        self.last_at = at
        if self.calibration is None and self.warming_up:
            return None
        if self.calibration is not None:
            if self.seen > self.warmup // 2:
                self.calibration.update(score)
            if self.seen >= self.warmup - 1:
                # Fixed from here on: keep the number and let the estimator go (one fewer per device).
                calibrated = self.calibration.get()
                self.normal_limit = float("inf") if calibrated is None else calibrated
                self.calibration = None
            return None
        threshold = self.threshold
        return self.persistence.update(on=score > threshold, clear=score <= threshold * self.hold)

    def is_normal(self, score: float) -> bool:
        """Whether a model may learn from the sample that produced ``score``."""
        return self.warming_up or (not self.active and score <= self.normal_limit)
