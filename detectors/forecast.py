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

from array import array

from river import stats


class TrendForecast:
    # One lives per monitored metric and limit: slots, not a __dict__ per instance, and the window
    # as float32 arrays (8 bytes a sample): times are kept as offsets from the fit's origin, and a
    # trend does not need more than float32's 7 digits of a reading.
    __slots__ = (
        "limit", "sign", "window", "warmup", "margin", "horizon_s", "persistence", "healthy_slopes", "typical",
        "seen", "run", "active", "slope", "_origin", "_added", "_sums", "_times", "_values", "_oldest",
    )

    def __init__(self, limit: float, direction: str, window: int, warmup: int, margin: float,
                 horizon_s: float, persistence: int, quantile: float = 0.99) -> None:
        if direction not in ("up", "down"):
            raise ValueError("direction is 'up' or 'down'")
        self.limit = limit
        self.sign = 1.0 if direction == "up" else -1.0
        self.window = window
        self._times = array("f")  # ring buffers: the oldest sample is at _oldest once they are full
        self._values = array("f")
        self._oldest = 0
        self.warmup = warmup
        self.margin = margin
        self.horizon_s = horizon_s
        self.persistence = persistence
        self.healthy_slopes: stats.Quantile | None = stats.Quantile(quantile)
        self.typical = 0.0  # the healthy |slope|: fixed after the warm-up, when the estimator is let go
        self.seen = 0
        self.run = 0
        self.active = False
        self.slope = 0.0
        self._origin = 0.0
        self._added = 0
        # n, sum t, sum v, sum t^2, sum t*v (t from _origin): doubles in place, not five float objects
        self._sums = array("d", bytes(40))

    def _add(self, t: float, value: float) -> None:
        """Keep running sums for the fit: O(1) per sample instead of a pass over the window."""
        n, st, sv, stt, stv = self._sums
        if len(self._times) == self.window:
            x, old = self._times[self._oldest], self._values[self._oldest]
            n, st, sv, stt, stv = n - 1.0, st - x, sv - old, stt - x * x, stv - x * old
            self._times[self._oldest], self._values[self._oldest] = t - self._origin, value
            newest = self._oldest
            self._oldest = (self._oldest + 1) % self.window
        else:
            self._times.append(t - self._origin)
            self._values.append(value)
            newest = len(self._times) - 1
        # Sums of what is stored (float32), so that removing a sample later takes out exactly what went in.
        x, value = self._times[newest], self._values[newest]
        sums = self._sums
        sums[0], sums[1], sums[2], sums[3], sums[4] = n + 1.0, st + x, sv + value, stt + x * x, stv + x * value
        self._added += 1
        if self._added >= self.window:
            self._rebase()

    def _rebase(self) -> None:
        """Re-base times on the oldest sample now and then: small numbers keep the sums exact."""
        self._added = 0
        order = list(range(self._oldest, len(self._times))) + list(range(self._oldest))
        shift = self._times[self._oldest]
        self._origin += shift
        self._times = array("f", [self._times[i] - shift for i in order])
        self._values = array("f", [self._values[i] for i in order])
        self._oldest = 0
        sums = [0.0] * 5
        for i in range(len(self._times)):
            sums = [a + b for a, b in zip(sums, self._terms(i))]
        self._sums = array("d", sums)

    def _terms(self, i: int) -> tuple[float, float, float, float, float]:
        x, value = self._times[i], self._values[i]
        return 1.0, x, value, x * x, x * value

    def _fit(self) -> tuple[float, float]:
        """Slope per second and the fitted value at the newest sample."""
        n, st, sv, stt, stv = self._sums
        variance = stt - st * st / n
        slope = (stv - st * sv / n) / variance if variance > 1e-12 else 0.0
        newest = self._times[(self._oldest - 1) % len(self._times)]
        return slope, sv / n + slope * (newest - st / n)

    def update(self, t: float, value: float) -> float | None:
        """Add a sample; the predicted crossing time when a forecast is raised (once per episode)."""
        if not self._times:
            self._origin = t
        self._add(t, value)
        if len(self._times) < self.window:
            return None
        self.seen += 1
        slope, level = self._fit()
        self.slope = slope
        if self.healthy_slopes is not None:
            self.healthy_slopes.update(abs(slope))
            if self.seen >= self.warmup:
                self.typical = self.healthy_slopes.get() or 0.0
                self.healthy_slopes = None
            return None
        toward = slope * self.sign
        typical = self.typical
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
