"""Detector quality, one command: simulator scenarios with ground truth, then SKAB.

The simulator table (see :mod:`bench.scenarios`): faults caught before their failure point,
detection delay, true and false work orders per seed and in total. Then, with ``--skab``,
the SKAB table (a public water-pump benchmark, under its outlier-detection protocol):

Each file: the first 400 rows fit the model (no alerts), the rest is scored row by row while the
model keeps learning one reading at a time (only from rows it judges normal). A row is predicted
anomalous while an alert is active. F1, FAR (false alarms / normal rows) and MAR (missed /
anomalous rows) are pooled over all files, two ways:

* "leaderboard": every row of every file, fit rows included (as predicted: never anomalous).
  This is how SKAB's own notebooks score the published models (``core/utils.load_skab`` +
  ``chp_score(..., metric="binary")`` over whole files), so it is the column to hold against
  the leaderboard (best published batch model: F1 0.78, FAR 13.6%).
* "after fit": only the rows after the first 400, the stricter reading of the protocol; the
  fit rows are normal, so FAR roughly doubles.
* "windowed": the streaming benchmarks' score (``bench.windowed``: the earliest alert in each
  labelled window rewarded, each false alert penalised, the first 15 % of a file unscored).

Every model goes through the same alert gate (warm-up, calibrated quantile threshold, K-of-M
persistence, off-delay), so the table compares the models. ``--config`` adds a row for the
model and gate a gateway configuration file gives its default model (e.g. the steady-process
example, whose metrics are each scored in their own normal variation); the warm-up is always
the protocol's 400 fit rows.

    python -m bench.evaluate --skab ../shared/data/skab --config examples/steady-process.yaml

``--seeds`` picks the simulated fleets (default 1-5, about a minute each); ``--seeds ''`` skips them.
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

from bench import scenarios, windowed
from bench.scenarios import ModelUnderTest
from detectors.alerting import AdaptiveThreshold
from detectors.base import Detector
from detectors.config import DetectorConfig, ModelConfig
from detectors.engine import MODELS as ENGINE_MODELS
from detectors.engine import gate_of
from gateway.config import load_config

FIT_ROWS = 400


class BareHalfSpaceTrees:
    """river's HalfSpaceTrees on features min-max scaled with the fit rows' range (the naive baseline)."""

    def __init__(self) -> None:
        self.model = anomaly.HalfSpaceTrees(n_trees=10, height=8, window_size=250, seed=42)  # river defaults
        self.low: dict[str, float] = {}
        self.high: dict[str, float] = {}

    def _scaled(self, x: dict[str, float]) -> dict[str, float]:
        return {k: (v - self.low[k]) / (self.high[k] - self.low[k] or 1.0) for k, v in x.items() if k in self.low}

    def learn_one(self, x: dict[str, float], at: float = 0.0) -> None:
        for k, v in x.items():
            self.low[k], self.high[k] = min(self.low.get(k, v), v), max(self.high.get(k, v), v)
        self.model.learn_one(self._scaled(x))

    def score_one(self, x: dict[str, float], at: float = 0.0) -> float:
        return self.model.score_one(self._scaled(x)) if self.low else 0.0

    def contributions(self) -> dict[str, float]:
        return {}


class RollingZScore:
    """Largest |z| of any feature against its rolling mean and deviation (the other naive baseline).

    Running sums over the window (of values shifted by the first one, so the sums stay small).
    """

    def __init__(self, window: int = FIT_ROWS) -> None:
        self.window = window
        self.windows: dict[str, deque[float]] = {}
        self.shift: dict[str, float] = {}
        self.sums: dict[str, list[float]] = {}  # sum, sum of squares

    def learn_one(self, x: dict[str, float], at: float = 0.0) -> None:
        for k, v in x.items():
            values = self.windows.get(k)
            if values is None:
                values, self.shift[k], self.sums[k] = self.windows.setdefault(k, deque()), v, [0.0, 0.0]
            sums, u = self.sums[k], v - self.shift[k]
            values.append(u)
            sums[0] += u
            sums[1] += u * u
            if len(values) > self.window:
                old = values.popleft()
                sums[0] -= old
                sums[1] -= old * old

    def score_one(self, x: dict[str, float], at: float = 0.0) -> float:
        score = 0.0
        for k, v in x.items():
            values = self.windows.get(k)
            if not values or len(values) < 2:
                continue
            n, (total, squares) = len(values), self.sums[k]
            mean = total / n
            std = math.sqrt(max(squares - n * mean * mean, 0.0) / (n - 1)) or 1e-9
            score = max(score, abs(v - self.shift[k] - mean) / std)
        return score

    def contributions(self) -> dict[str, float]:
        return {}


GateFactory = Callable[[], AdaptiveThreshold]


def engine_model(config: DetectorConfig, model: ModelConfig,
                 warmup: int = FIT_ROWS) -> ModelUnderTest:
    """A model and its gate exactly as the engine builds them for a device using ``model``."""
    return (lambda: ENGINE_MODELS[model.type].build(model)), (lambda: gate_of(config, model, warmup))


def baseline(make: Callable[[], Detector], config: DetectorConfig,
             warmup: int = FIT_ROWS) -> ModelUnderTest:
    """A naive baseline behind the same gate, without any model's floor."""
    return make, (lambda: gate_of(config, ModelConfig(type="robust_baseline", min_threshold=0.0), warmup))


def models(config: DetectorConfig) -> dict[str, ModelUnderTest]:
    return {
        "adaptive baseline (default)": engine_model(config, config.model),
        "robust baseline (old default)": engine_model(config, ModelConfig(type="robust_baseline")),
        "residual regression": engine_model(config, ModelConfig(type="residual_regression")),
        "scaled half-space trees": engine_model(config, ModelConfig(type="half_space_trees")),
        "bare river HalfSpaceTrees": baseline(BareHalfSpaceTrees, config),
        "rolling z-score": baseline(RollingZScore, config),
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


def run_file(make: Callable[[], Detector], make_gate: GateFactory, features: list[dict[str, float]]) -> list[int]:
    """Predictions for every row of one file (the fit rows are never anomalous: no alert in warm-up)."""
    model = make()
    gate = make_gate()
    predicted = []
    for i, x in enumerate(features):
        at = float(i)  # SKAB samples at 1 Hz
        score = model.score_one(x, at)
        gate.update(score, at)
        if gate.is_normal(score):
            model.learn_one(x, at)
        predicted.append(1 if gate.active else 0)
    return predicted


def segments(labels: list[int]) -> list[tuple[int, int]]:
    """The labelled anomaly windows of one file, as [start, end) row indexes."""
    found, start = [], None
    for i, label in enumerate([*labels, 0]):
        if label and start is None:
            start = i
        elif not label and start is not None:
            found.append((start, i))
            start = None
    return found


def rising_edges(predicted: list[int]) -> list[int]:
    """Rows where an alert was raised (what the windowed score counts as detections)."""
    return [i for i, p in enumerate(predicted) if p and (i == 0 or not predicted[i - 1])]


def scores(predicted: list[int], labels: list[int]) -> tuple[float, float, float]:
    """F1, FAR and MAR of pooled predictions."""
    tp = sum(1 for p, y in zip(predicted, labels) if p and y)
    fp = sum(1 for p, y in zip(predicted, labels) if p and not y)
    fn = sum(1 for p, y in zip(predicted, labels) if not p and y)
    tn = len(labels) - tp - fp - fn
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return f1, fp / (fp + tn) if fp + tn else 0.0, fn / (fn + tp) if fn + tp else 0.0


def simulator_models_table(args: argparse.Namespace) -> None:
    """Our default model against the naive baselines on the simulator's fleets, each model alone."""
    config = DetectorConfig()
    warmup = config.warmup_samples
    rows = {f"{config.model.type.replace('_', ' ')} (default)": engine_model(config, config.model, warmup),
            "robust baseline (old default)": engine_model(config, ModelConfig(type="robust_baseline"), warmup),
            "bare river HalfSpaceTrees": baseline(BareHalfSpaceTrees, config, warmup),
            "rolling z-score": baseline(RollingZScore, config, warmup)}
    results: dict[str, list[scenarios.ScenarioResult]] = {name: [] for name in rows}
    for seed in scenarios.seeds_of(args):
        for name, result in scenarios.run_models_alone(args.devices, args.days, args.interval, seed, warmup,
                                                        rows).items():
            results[name].append(result)
    print("each model alone behind the same gate (no limit rules, forecasts or stuck checks), same fleets:")
    scenarios.report_models(results)


def skab_table(args: argparse.Namespace) -> None:
    overrides = {"margin": args.margin, "quantile": args.quantile, "persistence_k": args.k,
                 "persistence_m": args.m, "clear_after": args.clear_after}
    config = DetectorConfig(**{k: v for k, v in overrides.items() if v is not None})
    rows = models(config)
    for path in args.config:
        configured = load_config(path).detectors
        rows[f"robust baseline, {path.name}" if configured.model.type == "robust_baseline"
             else f"{configured.model.type}, {path.name}"] = engine_model(configured, configured.model)
    files = read_skab(args.skab)
    print(f"SKAB: {len(files)} files, {sum(len(f[2]) - FIT_ROWS for f in files)} scored rows; gate: quantile "
          f"{config.quantile}, margin {config.margin} (quantile-calibrated models), on/off-delay "
          + (f"{config.persistence_k} of {config.persistence_m}" if config.persistence_k else "the model's own")
          + f", clear after {config.clear_after or 'the model' + chr(39) + 's own'}")
    print(f"{'':<40}{'leaderboard (whole files)':>26}{'after fit rows only':>26}")
    print(f"{'model':<40}" + f"{'F1':>8}{'FAR %':>9}{'MAR %':>9}" * 2 + f"{'windowed':>10}{'rows/s':>10}")
    for name, (make, make_gate) in rows.items():
        whole: tuple[list[int], list[int]] = ([], [])
        after: tuple[list[int], list[int]] = ([], [])
        started = time.perf_counter()
        parts = []
        for _, features, labels in files:
            predicted = run_file(make, make_gate, features)
            parts.append(windowed.raw(segments(labels), rising_edges(predicted), len(labels)))
            whole[0].extend(predicted)
            whole[1].extend(labels)
            after[0].extend(predicted[FIT_ROWS:])
            after[1].extend(labels[FIT_ROWS:])
        rate = len(whole[0]) / (time.perf_counter() - started)
        cells = ""
        for predicted, labels in (whole, after):
            f1, far, mar = scores(predicted, labels)
            cells += f"{f1:>8.3f}{far * 100:>9.1f}{mar * 100:>9.1f}"
        print(f"{name:<40}{cells}{windowed.normalised(parts):>10.1f}{rate:>10.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    scenarios.add_arguments(parser)
    parser.add_argument("--skab", type=Path, default=None, help="SKAB's data folder (valve1/, valve2/, other/)")
    parser.add_argument("--config", type=Path, action="append", default=[],
                        help="SKAB: also score the default model and gate of this gateway config file (repeatable)")
    parser.add_argument("--margin", type=float, default=None, help="SKAB: override the threshold margin")
    parser.add_argument("--quantile", type=float, default=None, help="SKAB: override the threshold quantile")
    parser.add_argument("--k", type=int, default=None, help="SKAB: persistence K (of M)")
    parser.add_argument("--m", type=int, default=None, help="SKAB: persistence M")
    parser.add_argument("--clear-after", type=int, default=None, help="SKAB: off-delay, in samples")
    args = parser.parse_args()
    if args.seeds:
        scenarios.run_seeds(args)
        print()
        simulator_models_table(args)
    if args.skab is not None:
        print()
        skab_table(args)


if __name__ == "__main__":
    main()
