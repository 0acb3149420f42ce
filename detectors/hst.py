"""River's Half-Space Trees on standardised features.

HalfSpaceTrees expects features in [0, 1]. Min-max scaling that keeps adapting
would stretch to follow a fault, so each feature is standardised with its own
running mean and deviation (learned only from normal samples) and squashed
into [0, 1]; ``z_scores`` tells which metric moved most.

>>> model = ScaledHalfSpaceTrees(seed=42)
>>> for i in range(400):
...     model.learn_one({"vibration": 2.0 + 0.1 * (i % 7), "temperature": 50.0 + (i % 5)})
>>> model.score_one({"vibration": 2.3, "temperature": 52.0}) < model.score_one({"vibration": 9.0, "temperature": 80.0})
True
>>> _ = model.score_one({"vibration": 9.0, "temperature": 52.0})
>>> max(model.contributions().items(), key=lambda kv: abs(kv[1]))[0]
'vibration'
"""

from __future__ import annotations

import math

from river import anomaly

# Standard scores beyond +-Z_RANGE all land on the edge of the unit interval.
Z_RANGE = 4.0


class RunningStats:
    """Welford's mean and variance of one feature."""

    __slots__ = ("count", "mean", "_m2")

    def __init__(self) -> None:
        self.count = 0
        self.mean = 0.0
        self._m2 = 0.0

    def update(self, value: float) -> None:
        self.count += 1
        delta = value - self.mean
        self.mean += delta / self.count
        self._m2 += delta * (value - self.mean)

    @property
    def std(self) -> float:
        return math.sqrt(self._m2 / (self.count - 1)) if self.count > 1 else 0.0

    def z(self, value: float) -> float:
        std = self.std
        # A feature that never varied in training: any change is a full-scale move.
        if std < 1e-9:
            return 0.0 if abs(value - self.mean) < 1e-9 else math.copysign(Z_RANGE, value - self.mean)
        return (value - self.mean) / std


class ScaledHalfSpaceTrees:
    def __init__(self, n_trees: int = 10, height: int = 8, window_size: int = 100, seed: int | None = None) -> None:
        self.model = anomaly.HalfSpaceTrees(
            n_trees=n_trees, height=height, window_size=window_size, seed=seed
        )
        self.stats: dict[str, RunningStats] = {}
        self._last: dict[str, float] = {}

    def z_scores(self, x: dict[str, float]) -> dict[str, float]:
        return {name: self.stats[name].z(value) for name, value in x.items() if name in self.stats}

    def _scaled(self, x: dict[str, float]) -> dict[str, float]:
        return {
            name: min(1.0, max(0.0, 0.5 + z / (2 * Z_RANGE))) for name, z in self.z_scores(x).items()
        }

    def learn_one(self, x: dict[str, float], at: float = 0.0) -> None:
        for name, value in x.items():
            stats = self.stats.get(name)
            if stats is None:
                stats = self.stats[name] = RunningStats()
            stats.update(value)
        self.model.learn_one(self._scaled(x))

    def score_one(self, x: dict[str, float], at: float = 0.0) -> float:
        self._last = x
        return self.model.score_one(self._scaled(x))

    def contributions(self) -> dict[str, float]:
        return self.z_scores(self._last)
