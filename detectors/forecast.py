"""When will a metric cross its limit? A trend forecast that raises predictive anomalies.

Over the last ``window`` good samples the metric's trend is fitted by least squares. A
forecast is made when the trend points at the limit, the crossing is within ``horizon_s``,
and the slope is beyond what this stream showed while healthy: ``margin`` times a high
quantile of its |slope| during the warm-up (a load cycle swings a temperature up and down
every few minutes; only a slope steeper than those is a trend). It must hold for
``persistence`` samples in a row, and is raised once until the trend has gone.

>>> forecast = TrendForecast(limit=90.0, direction="up", window=20, warmup=100, margin=3.0,
...                          horizon_s=3600.0, persistence=3)
>>> import math
>>> healthy = [forecast.update(float(t), 60 + 2 * math.sin(t / 50)) for t in range(200)]
>>> any(healthy)
False
>>> due = [forecast.update(float(t), 60 + 0.2 * (t - 200)) for t in range(200, 260)]
>>> raised = next(d for d in due if d)
>>> 300 < raised < 400  # 60 + 0.2 x (t - 200) reaches 90 at t = 350
True
"""

from __future__ import annotations

from collections import deque

from river import stats


class TrendForecast:
    def __init__(self, limit: float, direction: str, window: int, warmup: int, margin: float,
                 horizon_s: float, persistence: int, quantile: float = 0.99) -> None:
        if direction not in ("up", "down"):
            raise ValueError("direction is 'up' or 'down'")
        self.limit = limit
        self.sign = 1.0 if direction == "up" else -1.0
        self.samples: deque[tuple[float, float]] = deque(maxlen=window)
        self.warmup = warmup
        self.margin = margin
        self.horizon_s = horizon_s
        self.persistence = persistence
        self.healthy_slopes = stats.Quantile(quantile)
        self.seen = 0
        self.run = 0
        self.active = False
        self.slope = 0.0
        self._origin = 0.0
        self._added = 0
        self._sums = [0.0] * 5  # n, sum t, sum v, sum t^2, sum t*v (t from _origin)

    def _add(self, t: float, value: float) -> None:
        """Keep running sums for the fit: O(1) per sample instead of a pass over the window."""
        if len(self.samples) == self.samples.maxlen:
            old_t, old_v = self.samples[0]
            self._sums = [a - b for a, b in zip(self._sums, self._terms(old_t, old_v))]
        self.samples.append((t, value))
        self._sums = [a + b for a, b in zip(self._sums, self._terms(t, value))]
        self._added += 1
        if self._added >= self.samples.maxlen:  # type: ignore[operator]
            # Re-base on the oldest sample now and then: small numbers keep the sums exact.
            self._added = 0
            self._origin = self.samples[0][0]
            self._sums = [0.0] * 5
            for sample_t, sample_v in self.samples:
                self._sums = [a + b for a, b in zip(self._sums, self._terms(sample_t, sample_v))]

    def _terms(self, t: float, value: float) -> tuple[float, float, float, float, float]:
        x = t - self._origin
        return 1.0, x, value, x * x, x * value

    def _fit(self) -> tuple[float, float]:
        """Slope per second and the fitted value at the newest sample."""
        n, st, sv, stt, stv = self._sums
        variance = stt - st * st / n
        slope = (stv - st * sv / n) / variance if variance > 1e-12 else 0.0
        newest = self.samples[-1][0] - self._origin
        return slope, sv / n + slope * (newest - st / n)

    def update(self, t: float, value: float) -> float | None:
        """Add a sample; the predicted crossing time when a forecast is raised (once per episode)."""
        if not self.samples:
            self._origin = t
        self._add(t, value)
        if len(self.samples) < self.samples.maxlen:  # type: ignore[operator]
            return None
        self.seen += 1
        slope, level = self._fit()
        self.slope = slope
        if self.seen <= self.warmup:
            self.healthy_slopes.update(abs(slope))
            return None
        toward = slope * self.sign
        typical = self.healthy_slopes.get() or 0.0
        gap = (self.limit - level) * self.sign
        eta = gap / toward if toward > 0 else float("inf")
        steep = toward > self.margin * typical and 0 < eta <= self.horizon_s
        self.run = self.run + 1 if steep else 0
        if self.active:
            if self.run == 0 and toward <= typical:
                self.active = False  # the trend is gone: a new one may be forecast
            return None
        if self.run >= self.persistence:
            self.active = True
            return t + eta
        return None
