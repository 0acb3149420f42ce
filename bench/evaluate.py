"""Detector quality on SKAB (a public water-pump benchmark), under its outlier-detection protocol.

Each file: the first 400 rows fit the model (no alerts), the rest is scored row by row while the
model keeps learning one reading at a time (only from rows it judges normal). A row is predicted
anomalous while an alert is active. F1, FAR (false alarms / normal rows) and MAR (missed /
anomalous rows) are pooled over all scored rows of all files, as on SKAB's leaderboard
(best published batch model: F1 0.78, FAR 13.6%).

Every model goes through the same alert gate (warm-up, calibrated quantile threshold, K-of-M
persistence, off-delay), so the table compares the models.

    python -m bench.evaluate --skab ../shared/data/skab
"""

from __future__ import annotations

import argparse
import csv
import math
import time
from collections import deque
from pathlib import Path
from typing import Callable

from river import anomaly

from detectors.alerting import AdaptiveThreshold
from detectors.base import Detector
from detectors.config import DetectorConfig
from detectors.hst import ScaledHalfSpaceTrees
from detectors.residual import ResidualRegression

FIT_ROWS = 400


class BareHalfSpaceTrees:
    """river's HalfSpaceTrees on features min-max scaled with the fit rows' range (the naive baseline)."""

    def __init__(self) -> None:
        self.model = anomaly.HalfSpaceTrees(n_trees=10, height=8, window_size=250, seed=42)  # river defaults
        self.low: dict[str, float] = {}
        self.high: dict[str, float] = {}

    def _scaled(self, x: dict[str, float]) -> dict[str, float]:
        return {k: (v - self.low[k]) / (self.high[k] - self.low[k] or 1.0) for k, v in x.items() if k in self.low}

    def learn_one(self, x: dict[str, float]) -> None:
        for k, v in x.items():
            self.low[k], self.high[k] = min(self.low.get(k, v), v), max(self.high.get(k, v), v)
        self.model.learn_one(self._scaled(x))

    def score_one(self, x: dict[str, float]) -> float:
        return self.model.score_one(self._scaled(x)) if self.low else 0.0

    def contributions(self) -> dict[str, float]:
        return {}


class RollingZScore:
    """Largest |z| of any feature against its rolling mean and deviation (the other naive baseline)."""

    def __init__(self, window: int = FIT_ROWS) -> None:
        self.windows: dict[str, deque[float]] = {}
        self.window = window

    def learn_one(self, x: dict[str, float]) -> None:
        for k, v in x.items():
            self.windows.setdefault(k, deque(maxlen=self.window)).append(v)

    def score_one(self, x: dict[str, float]) -> float:
        score = 0.0
        for k, v in x.items():
            values = self.windows.get(k)
            if not values or len(values) < 2:
                continue
            mean = sum(values) / len(values)
            std = math.sqrt(sum((u - mean) ** 2 for u in values) / (len(values) - 1)) or 1e-9
            score = max(score, abs(v - mean) / std)
        return score

    def contributions(self) -> dict[str, float]:
        return {}


MODELS: dict[str, Callable[[], Detector]] = {
    "residual regression (default)": ResidualRegression,
    "scaled half-space trees": ScaledHalfSpaceTrees,
    "bare river HalfSpaceTrees": BareHalfSpaceTrees,
    "rolling z-score": RollingZScore,
}


def read_skab(root: Path) -> list[tuple[str, list[dict[str, float]], list[int]]]:
    files = []
    for path in sorted(root.glob("*/*.csv")):
        if path.parent.name == "anomaly-free":
            continue
        with path.open() as handle:
            rows = list(csv.DictReader(handle, delimiter=";"))
        features = [{k: float(v) for k, v in row.items() if k not in ("datetime", "anomaly", "changepoint")}
                    for row in rows]
        labels = [int(float(row["anomaly"])) for row in rows]
        files.append((f"{path.parent.name}/{path.name}", features, labels))
    return files


def run_file(make: Callable[[], Detector], features: list[dict[str, float]], config: DetectorConfig) -> list[int]:
    model = make()
    gate = AdaptiveThreshold(warmup=FIT_ROWS, quantile=config.quantile, margin=config.margin,
                             k=config.persistence_k, m=config.persistence_m, clear_after=config.clear_after)
    predicted = []
    for x in features:
        score = model.score_one(x)
        gate.update(score)
        if gate.is_normal(score):
            model.learn_one(x)
        predicted.append(1 if gate.active else 0)
    return predicted[FIT_ROWS:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--skab", type=Path, required=True, help="SKAB's data folder (valve1/, valve2/, other/)")
    parser.add_argument("--margin", type=float, default=None, help="override the threshold margin")
    parser.add_argument("--quantile", type=float, default=None)
    parser.add_argument("--k", type=int, default=None, help="persistence K (of M)")
    parser.add_argument("--m", type=int, default=None)
    parser.add_argument("--clear-after", type=int, default=None)
    args = parser.parse_args()
    overrides = {"margin": args.margin, "quantile": args.quantile, "persistence_k": args.k,
                 "persistence_m": args.m, "clear_after": args.clear_after}
    config = DetectorConfig(**{k: v for k, v in overrides.items() if v is not None})
    files = read_skab(args.skab)
    print(f"SKAB: {len(files)} files, {sum(len(f[2]) - FIT_ROWS for f in files)} scored rows; gate: quantile "
          f"{config.quantile}, margin {config.margin}, {config.persistence_k} of {config.persistence_m}, "
          f"clear after {config.clear_after}")
    print(f"{'model':<32}{'F1':>7}{'FAR %':>8}{'MAR %':>8}{'rows/s':>10}")
    for name, make in MODELS.items():
        tp = fp = fn = tn = 0
        started = time.perf_counter()
        rows = 0
        for _, features, labels in files:
            predicted = run_file(make, features, config)
            rows += len(features)
            for p, y in zip(predicted, labels[FIT_ROWS:]):
                tp += p and y
                fp += p and not y
                fn += (not p) and y
                tn += (not p) and not y
        elapsed = time.perf_counter() - started
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        far = fp / (fp + tn) if fp + tn else 0.0
        mar = fn / (fn + tp) if fn + tp else 0.0
        print(f"{name:<32}{f1:>7.2f}{far * 100:>8.1f}{mar * 100:>8.1f}{rows / elapsed:>10.0f}")


if __name__ == "__main__":
    main()
