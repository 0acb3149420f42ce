"""Detector quality on simulator scenarios with ground truth: recall, delay, precision, false work orders.

A seeded fleet of pumps, motors and compressors runs for some days at one sample every
``interval_s``; half the devices get one fault (bearing wear, overheating or cavitation)
that starts after the warm-up and reaches its failure point hours later. Every reading goes
through the default detector set (rules, forecasts, stuck sensors, the river model). Findings
are grouped per device as ticketing groups them (one incident while findings keep coming
within an hour) into would-be work orders.

A work order is true when it opens on a faulty device after the fault's onset (the fault
stays after its failure point: the machine is broken until someone repairs it); every
other one is false. Reported: faults caught before their failure
point, detection delay (share of the fault's duration gone by), precision of work orders,
and false work orders per 100 device-days.

    python -m bench.scenarios --devices 30 --days 3.5 --interval 10
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from dataclasses import dataclass

from detectors.config import DetectorConfig, ModelConfig
from detectors.engine import MODELS, DetectorEngine
from gateway.core import Anomaly, Reading
from simulators.physics import DEVICE_TYPES, DeviceModel, DeviceSpec, Fault

GROUP_WINDOW_S = 3600.0
FAULTS_BY_TYPE = {"pump": ("bearing_wear", "overheating", "cavitation"),
                  "motor": ("bearing_wear", "overheating"), "compressor": ("bearing_wear", "overheating")}


@dataclass
class Incident:
    device_id: str
    opened_at: float
    last_at: float
    detector: str


def fleet(devices: int, days: float, seed: int, warmup_s: float) -> tuple[list[DeviceSpec], list[Fault]]:
    rng = random.Random(seed)
    specs = [DeviceSpec(f"{DEVICE_TYPES[i % 3]}-{i:03d}", DEVICE_TYPES[i % 3], "sim") for i in range(devices)]
    faults = []
    for spec in specs[::2]:
        duration = rng.uniform(4, 24) * 3600
        onset = rng.uniform(warmup_s + 6 * 3600, days * 86400 - duration)
        faults.append(Fault(spec.id, rng.choice(FAULTS_BY_TYPE[spec.type]), onset, duration))
    return specs, faults


def incidents_of(anomalies: list[Anomaly]) -> list[Incident]:
    """Findings of one device within the grouping window of the last one are one work order."""
    open_by_device: dict[str, Incident] = {}
    incidents = []
    for anomaly in sorted(anomalies, key=lambda a: a.detected_at):
        current = open_by_device.get(anomaly.device_id)
        if current is not None and anomaly.detected_at - current.last_at <= GROUP_WINDOW_S:
            current.last_at = anomaly.detected_at
            continue
        current = open_by_device[anomaly.device_id] = Incident(
            anomaly.device_id, anomaly.detected_at, anomaly.detected_at, anomaly.detector)
        incidents.append(current)
    return incidents


def run(devices: int, days: float, interval_s: float, seed: int, model: str | None) -> None:
    config = DetectorConfig(checkpoint_path=None)
    if model is not None:
        config.model = ModelConfig(type=model)
    warmup_s = config.warmup_samples * interval_s
    specs, faults = fleet(devices, days, seed, warmup_s)
    models = {spec.id: DeviceModel(spec, seed=seed * 1000 + i) for i, spec in enumerate(specs)}
    for fault in faults:
        models[fault.device_id].inject(fault)
    engine = DetectorEngine(config, {spec.id: spec.type for spec in specs})
    anomalies: list[Anomaly] = []
    readings = 0
    started = time.perf_counter()
    steps = int(days * 86400 / interval_s)
    for step in range(steps):
        t = step * interval_s
        batch = [Reading(device, metric, value, t) for device, model in models.items()
                 for metric, value in model.step(t).items()]
        readings += len(batch)
        anomalies += engine.process(batch)
    elapsed = time.perf_counter() - started

    incidents = incidents_of(anomalies)
    fault_of = {fault.device_id: fault for fault in faults}
    true, false = [], []
    for incident in incidents:
        fault = fault_of.get(incident.device_id)
        # A fault stays after its failure point (the machine is broken until repaired): later orders are true too.
        inside = fault is not None and incident.opened_at >= fault.onset
        (true if inside else false).append(incident)
    caught, delays, missed = 0, [], []
    for fault in faults:
        first = min((a.detected_at for a in anomalies
                     if a.device_id == fault.device_id and fault.onset <= a.detected_at <= fault.failure_at),
                    default=None)
        if first is not None:
            caught += 1
            delays.append((first - fault.onset) / fault.duration)
        else:
            missed.append(f"{fault.kind} on {fault.device_id} ({fault.duration / 3600:.1f} h)")
    device_days = devices * (days - warmup_s / 86400)
    print(f"model {config.model.type}; simulator: {devices} devices x {days:g} days at {interval_s:g} s ({device_days:.0f} device-days after "
          f"warm-up), {len(faults)} faults, seed {seed}; {readings / elapsed:,.0f} readings/s")
    print(f"{'faults caught before failure':<34}{caught}/{len(faults)}" + (f"; missed: {', '.join(missed)}"
                                                                            if missed else ""))
    if delays:
        print(f"{'detection delay (share of fault)':<34}median {statistics.median(delays):.0%}, "
              f"worst {max(delays):.0%}")
    print(f"{'work orders (true / false)':<34}{len(true)} / {len(false)}")
    print(f"{'precision of work orders':<34}{len(true) / max(1, len(incidents)):.2f}")
    print(f"{'false work orders / 100 dev-days':<34}{100 * len(false) / device_days:.2f}")
    by_detector: dict[str, int] = {}
    for incident in false:
        by_detector[incident.detector] = by_detector.get(incident.detector, 0) + 1
    if by_detector:
        print(f"{'false ones opened by':<34}" + ", ".join(f"{k} {v}" for k, v in sorted(by_detector.items())))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=30)
    parser.add_argument("--days", type=float, default=3.5)
    parser.add_argument("--interval", type=float, default=10.0, help="seconds between samples")
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--model", choices=sorted(MODELS), default=None, help="another model than the default")
    args = parser.parse_args()
    run(args.devices, args.days, args.interval, args.seed, args.model)


if __name__ == "__main__":
    main()
