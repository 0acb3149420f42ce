"""Each metric predicted from the device's other metrics; the score is the largest surprise.

Metrics of one machine move together with its load: flow, pressure, current and
vibration rise and fall as one, and temperatures follow with a thermal lag.
A fault breaks that relationship (bearing wear raises vibration at the same
load), so each metric is regressed on the others, on their slow moving
averages (for the lag) and on their squares (pressure grows with load
squared), with river's exact online ``BayesianLinearRegression``. The score of
a sample is its largest residual in units of that metric's usual residual
spread; the metric that owns it is the top contributor.

``score_one`` advances the moving averages, so call it once per sample, then
``learn_one`` for samples deemed normal.

>>> import math
>>> model = ResidualRegression()
>>> for t in range(600):
...     load = 0.6 + 0.2 * math.sin(t / 50)
...     x = {"current": 20 + 30 * load, "vibration": 1.6 + 0.9 * load + 0.01 * math.sin(t)}
...     _ = model.score_one(x)
...     model.learn_one(x)
>>> normal = {"current": 20 + 30 * 0.6, "vibration": 1.6 + 0.9 * 0.6}
>>> worn = {"current": 20 + 30 * 0.6, "vibration": 1.6 + 0.9 * 0.6 + 1.0}
>>> model.score_one(normal) < 3 < model.score_one(worn)
True
"""

from __future__ import annotations

from river import linear_model

from detectors.hst import RunningStats

MIN_RESIDUAL_STD = 1e-3
# Scales are fixed after this many normal samples: regressions absorb any
# affine change of scale, and a scale that kept adapting would follow a slow fault.
SCALE_SAMPLES = 300


class ResidualRegression:
    def __init__(self, lag_samples: float = 120.0) -> None:
        self.alpha = 1.0 / lag_samples
        self.scales: dict[str, RunningStats] = {}
        self.slow: dict[str, float] = {}
        self.regressions: dict[str, linear_model.BayesianLinearRegression] = {}
        self.residual_stats: dict[str, RunningStats] = {}
        self._features: dict[str, float] = {}
        self._residuals: dict[str, float] = {}
        self._z: dict[str, float] = {}

    def _standardise(self, x: dict[str, float]) -> dict[str, float]:
        return {name: self.scales[name].z(value) for name, value in x.items() if name in self.scales}

    def _inputs(self, target: str) -> dict[str, float]:
        return {name: value for name, value in self._features.items() if name.partition(":")[2] != target}

    def score_one(self, x: dict[str, float], at: float = 0.0) -> float:
        z = self._standardise(x)
        for name, value in z.items():
            previous = self.slow.get(name, value)
            self.slow[name] = previous + self.alpha * (value - previous)
        self._z = z
        self._features = {f"z:{n}": v for n, v in z.items()}
        self._features.update({f"slow:{n}": self.slow[n] for n in z})
        self._features.update({f"sq:{n}": v * v for n, v in z.items()})
        self._residuals = {}
        score = 0.0
        for name, value in z.items():
            regression = self.regressions.get(name)
            if regression is None or len(z) < 2:
                continue
            residual = value - regression.predict_one(self._inputs(name))
            self._residuals[name] = residual
            score = max(score, abs(self._surprise(name, residual)))
        return score

    def _surprise(self, name: str, residual: float) -> float:
        spread = self.residual_stats.get(name)
        if spread is None:
            return 0.0
        return (residual - spread.mean) / max(spread.std, MIN_RESIDUAL_STD)

    def contributions(self) -> dict[str, float]:
        """Signed surprise of each metric in the last scored sample (+ means higher than expected)."""
        return {name: self._surprise(name, residual) for name, residual in self._residuals.items()}

    def learn_one(self, x: dict[str, float], at: float = 0.0) -> None:
        for name, value in x.items():
            scale = self.scales.get(name)
            if scale is None:
                scale = self.scales[name] = RunningStats()
            if scale.count < SCALE_SAMPLES:
                scale.update(value)
        if len(self._z) < 2:
            return
        for name, value in self._z.items():
            if name in self._residuals:
                self.residual_stats.setdefault(name, RunningStats()).update(self._residuals[name])
            regression = self.regressions.get(name)
            if regression is None:
                regression = self.regressions[name] = linear_model.BayesianLinearRegression(alpha=1, beta=1)
            regression.learn_one(self._inputs(name), value)
