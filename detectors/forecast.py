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

    def _fit(self) -> tuple[float, float]:
        """Slope per second and the fitted value at the newest sample."""
        n = len(self.samples)
        t0 = self.samples[-1][0]
        mean_t = sum(t - t0 for t, _ in self.samples) / n
        mean_v = sum(v for _, v in self.samples) / n
        covariance = sum((t - t0 - mean_t) * (v - mean_v) for t, v in self.samples)
        variance = sum((t - t0 - mean_t) ** 2 for t, _ in self.samples)
        slope = covariance / variance if variance > 0 else 0.0
        return slope, mean_v + slope * (0.0 - mean_t)

    def update(self, t: float, value: float) -> float | None:
        """Add a sample; the predicted crossing time when a forecast is raised (once per episode)."""
        self.samples.append((t, value))
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
