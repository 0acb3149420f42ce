"""Detector speed and memory: the default detector set against a bare river HalfSpaceTrees, same run.

Speed: a simulated fleet's readings are generated first (the simulator is not timed), then
fed once through the default detector set (limit rules, forecasts, stuck-sensor checks, the
default model, the alert gate, the evidence window), and once through a bare river
HalfSpaceTrees learn + score loop per device (the baseline: nothing else). Both run in this
process on one core; the ratio is ours / HST.

Memory: many univariate streams (one device, one metric with a limit rule, so the forecast
runs too) are warmed up and kept running; tracemalloc's growth divided by the streams is
the memory one monitored stream costs, its evidence window included.

    python -m bench.detectors --devices 20 --seconds 3000 --streams 2000
"""

from __future__ import annotations

import argparse
import gc
import time
import tracemalloc

from river import anomaly

from detectors.config import DetectorConfig
from detectors.engine import DetectorEngine
from gateway.core import Reading
from simulators.physics import DEVICE_TYPES, DeviceModel, DeviceSpec


def fleet_batches(devices: int, seconds: int) -> tuple[dict[str, str], list[list[Reading]]]:
    specs = [DeviceSpec(f"dev-{i:03d}", DEVICE_TYPES[i % len(DEVICE_TYPES)], "bench") for i in range(devices)]
    models = [DeviceModel(spec, seed=i) for i, spec in enumerate(specs)]
    batches = [[Reading(spec.id, metric, value, float(t)) for spec, model in zip(specs, models)
                for metric, value in model.step(float(t)).items()] for t in range(seconds)]
    return {spec.id: spec.type for spec in specs}, batches


def detector_config(season_bins: int | None, **settings: object) -> DetectorConfig:
    """The default configuration, optionally with another seasonal profile size (0: none)."""
    config = DetectorConfig(checkpoint_path=None, **settings)
    if season_bins is not None:
        config.model = config.model.model_copy(update={"season_bins": season_bins})
    return config


def ours_readings_per_s(device_types: dict[str, str], batches: list[list[Reading]],
                        season_bins: int | None = None) -> float:
    engine = DetectorEngine(detector_config(season_bins), device_types)
    readings = sum(len(batch) for batch in batches)
    started = time.perf_counter()
    for batch in batches:
        engine.process(batch)
    return readings / (time.perf_counter() - started)


def hst_readings_per_s(batches: list[list[Reading]]) -> float:
    samples: list[tuple[str, dict[str, float]]] = []
    for batch in batches:
        by_device: dict[str, dict[str, float]] = {}
        for reading in batch:
            by_device.setdefault(reading.device_id, {})[reading.metric] = reading.value
        samples += by_device.items()
    models: dict[str, anomaly.HalfSpaceTrees] = {}
    readings = sum(len(x) for _, x in samples)
    started = time.perf_counter()
    for device, x in samples:
        model = models.get(device)
        if model is None:
            model = models[device] = anomaly.HalfSpaceTrees(seed=42)
        model.score_one(x)
        model.learn_one(x)
    return readings / (time.perf_counter() - started)


def bytes_per_stream(streams: int, samples: int, season_bins: int | None = None) -> float:
    config = detector_config(season_bins, warmup_samples=samples // 2)
    device_types = {f"s-{i:05d}": "pump" for i in range(streams)}
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    engine = DetectorEngine(config, device_types)
    for t in range(samples):
        # A vibration signal with some texture: every stream learns, none alerts.
        engine.process([Reading(device, "vibration", 2.0 + 0.05 * ((t * 7 + i) % 11), float(t))
                        for i, device in enumerate(device_types)])
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    assert engine.anomalies == 0, "the memory run must measure quiet streams"
    return (after - before) / streams


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=20)
    parser.add_argument("--seconds", type=int, default=3000, help="samples per device in the speed run")
    parser.add_argument("--streams", type=int, default=2000, help="univariate streams in the memory run")
    parser.add_argument("--samples", type=int, default=400, help="samples per stream in the memory run")
    parser.add_argument("--season-bins", type=int, default=None,
                        help="the seasonal profile's bins per metric (0: no profile; default: the model's)")
    args = parser.parse_args()

    device_types, batches = fleet_batches(args.devices, args.seconds)
    readings = sum(len(batch) for batch in batches)
    hst = hst_readings_per_s(batches)
    ours = ours_readings_per_s(device_types, batches, args.season_bins)
    print(f"speed: {args.devices} devices x {args.seconds} samples = {readings:,} readings, one core")
    print(f"{'bare river HalfSpaceTrees':<34}{hst:>12,.0f} readings/s")
    print(f"{'default detector set':<34}{ours:>12,.0f} readings/s")
    print(f"{'ratio ours / HST':<34}{ours / hst:>12.2f}")
    per_stream = bytes_per_stream(args.streams, args.samples, args.season_bins)
    print(f"memory: {args.streams} univariate streams after {args.samples} samples each")
    print(f"{'per monitored stream':<34}{per_stream / 1024:>12.2f} KB")


if __name__ == "__main__":
    main()
