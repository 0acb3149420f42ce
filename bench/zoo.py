"""Detectors on the zoo of synthetic streams (``simulators.zoo``): detection, delay, false alerts.

Each stream goes through a whole ``DetectorEngine`` as the pipeline drives it (limit rules,
stuck-sensor checks, the model and its gate), one device with one metric. Per configuration:
which faults were found and how many samples after their onset, false alerts per 100,000
healthy samples (white and autocorrelated noise, a daily cycle), and the windowed score
(``bench.windowed``). Rows: the new default, the old default (robust baseline, 1,800-sample
warm-up, 8-of-10 on-delay, 30-sample off-delay) and a naive rolling z-score behind the same
quantile gate.

    python -m bench.zoo                  # 1 s and 5 min streams, seed 0
    python -m bench.zoo --seeds 0,1,2 --healthy 300000
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from typing import Callable

from bench import windowed
from detectors.config import DetectorConfig, ModelConfig
from detectors.engine import DetectorEngine
from gateway.core import Reading
from simulators import zoo

DEVICE = "meter-1"
# An alert this many samples after a window still counts as that window's (not false).
GRACE = 50

Runner = Callable[[zoo.Stream], list[int]]


def engine_runner(config: DetectorConfig) -> Runner:
    """The sample indexes at which the engine raised a finding on the stream."""

    def run(stream: zoo.Stream) -> list[int]:
        engine = DetectorEngine(config, {DEVICE: "meter"})
        index = {t: i for i, t in enumerate(stream.timestamps)}
        raised = []
        batch: list[Reading] = []
        for t, value in zip(stream.timestamps, stream.values):
            batch.append(Reading(DEVICE, "value", value, t))
            if len(batch) == 100:
                raised += [index[a.detected_at] for a in engine.process(batch)]
                batch = []
        raised += [index[a.detected_at] for a in engine.process(batch)]
        return sorted(raised)

    return run


def default_config() -> DetectorConfig:
    return DetectorConfig(checkpoint_path=None)


def old_default_config() -> DetectorConfig:
    """The default before the adaptive model (what a user got until now)."""
    return DetectorConfig(checkpoint_path=None, model=ModelConfig(type="robust_baseline"), warmup_s=math.inf,
                          persistence_k=8, persistence_m=10, clear_after=30)


def zscore_config() -> DetectorConfig:
    """Not an engine model: the engine's robust baseline stands in at its most naive settings."""
    return DetectorConfig(checkpoint_path=None, warmup_s=math.inf,
                          model=ModelConfig(type="robust_baseline", smoothing=1.0, alpha=0.05, clip=100.0),
                          persistence_k=1, persistence_m=1, clear_after=1, stuck={"enabled": False})


@dataclass
class Outcome:
    stream: zoo.Stream
    raised: list[int]

    def detections(self) -> list[int | None]:
        """Per window, samples from its start to the first finding in it (None: missed)."""
        found = []
        for start, end in self.stream.anomalies:
            first = next((i for i in self.raised if start <= i < end + GRACE), None)
            found.append(None if first is None else first - start)
        return found

    def false_alerts(self) -> int:
        return sum(1 for i in self.raised if not any(s <= i < e + GRACE for s, e in self.stream.anomalies))


def healthy_streams(samples: int, seed: int) -> list[zoo.Stream]:
    return [zoo.healthy(1.0, samples, seed), zoo.healthy(1.0, samples, seed, phi=0.8),
            zoo.healthy(300.0, samples, seed), zoo.healthy_seasonal(300.0, days=max(10, samples * 300 // 86400),
                                                                   seed=seed)]


def table(name: str, run: Runner, seeds: list[int], healthy_samples: int) -> None:
    print(f"\n{name}")
    print(f"{'stream':<28}{'found':>7}{'delay (samples)':>18}{'false':>7}")
    parts, found, windows, false, healthy = [], 0, 0, 0, 0
    for seed in seeds:
        for interval in (1.0, 300.0):
            for stream in zoo.faults(interval, seed):
                outcome = Outcome(stream, run(stream))
                delays = outcome.detections()
                hits = [d for d in delays if d is not None]
                found += len(hits)
                windows += len(delays)
                false += outcome.false_alerts()
                parts.append(windowed.raw(stream.anomalies, outcome.raised, len(stream.values)))
                if seed == seeds[0]:
                    shown = ",".join("-" if d is None else str(d) for d in delays)
                    print(f"{stream.name:<28}{len(hits)}/{len(delays):<5}{shown:>18}{outcome.false_alerts():>7}")
        for stream in healthy_streams(healthy_samples, seed):
            outcome = Outcome(stream, run(stream))
            false += outcome.false_alerts()
            healthy += len(stream.values)
            print(f"{stream.name:<28}{'':>7}{'':>18}{outcome.false_alerts():>7}  of {len(stream.values)} samples")
    print(f"found {found}/{windows} windows; false alerts {false} "
          f"({false / healthy * 100_000:.2f} per 100k healthy samples); "
          f"windowed score {windowed.normalised(parts)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="0", help="comma-separated seeds")
    parser.add_argument("--healthy", type=int, default=100_000, help="samples per healthy stream")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",") if s]
    for name, config in (("new default (adaptive baseline)", default_config()),
                         ("old default (robust baseline, 8 of 10)", old_default_config()),
                         ("naive z-score (every sample, no smoothing)", zscore_config())):
        table(name, engine_runner(config), seeds, args.healthy)


if __name__ == "__main__":
    main()
