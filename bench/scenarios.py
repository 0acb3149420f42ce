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

    python -m bench.scenarios --devices 30 --days 3.5 --interval 10 --seeds 1,2,3,4,5
"""

from __future__ import annotations

import argparse
import random
import statistics
from collections import Counter
from dataclasses import dataclass
from typing import Callable

from detectors.alerting import AdaptiveThreshold
from detectors.base import Detector
from detectors.config import DetectorConfig, ModelConfig
from detectors.engine import MODELS, DetectorEngine
from gateway.core import Reading
from simulators.physics import DEVICE_TYPES, DeviceModel, DeviceSpec, Fault

GROUP_WINDOW_S = 3600.0
FAULTS_BY_TYPE = {"pump": ("bearing_wear", "overheating", "cavitation"),
                  "motor": ("bearing_wear", "overheating"), "compressor": ("bearing_wear", "overheating")}


@dataclass(frozen=True)
class Finding:
    """What ticketing would receive: a device, when, and which detector raised it."""

    device_id: str
    at: float
    detector: str


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


def devices_of(specs: list[DeviceSpec], faults: list[Fault], seed: int) -> dict[str, DeviceModel]:
    models = {spec.id: DeviceModel(spec, seed=seed * 1000 + i) for i, spec in enumerate(specs)}
    for fault in faults:
        models[fault.device_id].inject(fault)
    return models


def incidents_of(findings: list[Finding]) -> list[Incident]:
    """Findings of one device within the grouping window of the last one are one work order."""
    open_by_device: dict[str, Incident] = {}
    incidents = []
    for finding in sorted(findings, key=lambda f: f.at):
        current = open_by_device.get(finding.device_id)
        if current is not None and finding.at - current.last_at <= GROUP_WINDOW_S:
            current.last_at = finding.at
            continue
        current = open_by_device[finding.device_id] = Incident(
            finding.device_id, finding.at, finding.at, finding.detector)
        incidents.append(current)
    return incidents


@dataclass
class ScenarioResult:
    seed: int
    faults: int
    caught: int
    delays: list[float]  # share of each caught fault's duration gone by at its first finding
    missed: list[str]
    true_orders: int
    false_by_detector: dict[str, int]
    device_days: float

    @property
    def false_orders(self) -> int:
        return sum(self.false_by_detector.values())


def judge(findings: list[Finding], faults: list[Fault], seed: int, device_days: float) -> ScenarioResult:
    fault_of = {fault.device_id: fault for fault in faults}
    true_orders, false_by_detector = 0, Counter[str]()
    for incident in incidents_of(findings):
        fault = fault_of.get(incident.device_id)
        # A fault stays after its failure point (the machine is broken until repaired): later orders are true too.
        if fault is not None and incident.opened_at >= fault.onset:
            true_orders += 1
        else:
            false_by_detector[incident.detector] += 1
    caught, delays, missed = 0, [], []
    for fault in faults:
        first = min((f.at for f in findings
                     if f.device_id == fault.device_id and fault.onset <= f.at <= fault.failure_at), default=None)
        if first is not None:
            caught += 1
            delays.append((first - fault.onset) / fault.duration)
        else:
            missed.append(f"{fault.kind} on {fault.device_id} ({fault.duration / 3600:.1f} h)")
    return ScenarioResult(seed, len(faults), caught, delays, missed, true_orders, dict(false_by_detector),
                          device_days)


def run(devices: int, days: float, interval_s: float, seed: int, config: DetectorConfig) -> ScenarioResult:
    """The whole detector set (rules, forecasts, stuck sensors, the model) through the engine."""
    warmup_s = config.warmup_samples * interval_s
    specs, faults = fleet(devices, days, seed, warmup_s)
    models = devices_of(specs, faults, seed)
    engine = DetectorEngine(config, {spec.id: spec.type for spec in specs})
    findings: list[Finding] = []
    for step in range(int(days * 86400 / interval_s)):
        t = step * interval_s
        anomalies = engine.process([Reading(device, metric, value, t) for device, model in models.items()
                                    for metric, value in model.step(t).items()])
        findings += [Finding(a.device_id, a.detected_at, a.detector) for a in anomalies]
    return judge(findings, faults, seed, devices * (days - warmup_s / 86400))


ModelUnderTest = tuple[Callable[[], Detector], Callable[[], AdaptiveThreshold]]


def run_models_alone(devices: int, days: float, interval_s: float, seed: int, warmup: int,
                     models: dict[str, ModelUnderTest]) -> dict[str, ScenarioResult]:
    """Each model and its alert gate per device, nothing else, on one fleet: how models compare.

    No limit rules, forecasts or stuck checks, so naive baselines (a bare HalfSpaceTrees, a rolling
    z-score) compete with ours on the same footing and the same readings.
    """
    specs, faults = fleet(devices, days, seed, warmup * interval_s)
    machines = devices_of(specs, faults, seed)
    running = {name: {device: (make(), make_gate()) for device in machines}
               for name, (make, make_gate) in models.items()}
    findings: dict[str, list[Finding]] = {name: [] for name in models}
    for step in range(int(days * 86400 / interval_s)):
        t = step * interval_s
        for device, machine in machines.items():
            x = machine.step(t)
            for name, per_device in running.items():
                detector, gate = per_device[device]
                score = detector.score_one(x, t)
                if gate.update(score, t) == "raise":
                    findings[name].append(Finding(device, t, name))
                if gate.is_normal(score):
                    detector.learn_one(x, t)
    device_days = devices * (days - warmup * interval_s / 86400)
    return {name: judge(found, faults, seed, device_days) for name, found in findings.items()}


def report_models(results: dict[str, list[ScenarioResult]]) -> None:
    """One row per model, totals over the seeds."""
    print(f"{'model alone':<30}{'caught':>9}{'delay median':>14}{'true WOs':>10}{'false WOs':>11}"
          f"{'per 100 dev-days':>18}")
    for name, per_seed in results.items():
        faults, caught = sum(r.faults for r in per_seed), sum(r.caught for r in per_seed)
        false, days = sum(r.false_orders for r in per_seed), sum(r.device_days for r in per_seed)
        delays = [d for r in per_seed for d in r.delays]
        median = f"{statistics.median(delays):.0%}" if delays else "-"
        print(f"{name:<30}{f'{caught}/{faults}':>9}{median:>14}{sum(r.true_orders for r in per_seed):>10}"
              f"{false:>11}{100 * false / days:>18.2f}")


def report(results: list[ScenarioResult]) -> None:
    """One row per seed and the total: what the targets are judged on."""
    print(f"{'seed':>6}{'caught':>9}{'delay median':>14}{'worst':>7}{'true WOs':>10}{'false WOs':>11}"
          f"{'per 100 dev-days':>18}  false ones opened by / missed")
    for r in results:
        median = f"{statistics.median(r.delays):.0%}" if r.delays else "-"
        worst = f"{max(r.delays):.0%}" if r.delays else "-"
        why = ", ".join(f"{k} {v}" for k, v in sorted(r.false_by_detector.items()))
        print(f"{r.seed:>6}{f'{r.caught}/{r.faults}':>9}{median:>14}{worst:>7}{r.true_orders:>10}{r.false_orders:>11}"
              f"{100 * r.false_orders / r.device_days:>18.2f}  {'; '.join(filter(None, [why, *r.missed]))}")
    faults, caught = sum(r.faults for r in results), sum(r.caught for r in results)
    false, days = sum(r.false_orders for r in results), sum(r.device_days for r in results)
    delays = [d for r in results for d in r.delays]
    print(f"{'all':>6}{f'{caught}/{faults}':>9}{statistics.median(delays) if delays else 0:>14.0%}"
          f"{max(delays, default=0):>7.0%}{sum(r.true_orders for r in results):>10}{false:>11}"
          f"{100 * false / days:>18.2f}  ({days:.0f} device-days after warm-up)")


def scenario_config(model: str | None) -> DetectorConfig:
    config = DetectorConfig(checkpoint_path=None)
    if model is not None:
        config.model = ModelConfig(type=model)
    return config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--devices", type=int, default=30)
    parser.add_argument("--days", type=float, default=3.5)
    parser.add_argument("--interval", type=float, default=10.0, help="seconds between samples")
    parser.add_argument("--seeds", default="1,2,3,4,5", help="one fleet per seed, comma-separated")
    parser.add_argument("--model", choices=sorted(MODELS), default=None, help="another model than the default")


def seeds_of(args: argparse.Namespace) -> list[int]:
    return [int(seed) for seed in args.seeds.split(",")]


def run_seeds(args: argparse.Namespace) -> list[ScenarioResult]:
    config = scenario_config(args.model)
    seeds = seeds_of(args)
    print(f"simulator: model {config.model.type}; {args.devices} devices x {args.days:g} days at {args.interval:g} s "
          f"per seed, half of them with one fault (bearing wear, overheating, cavitation)")
    results = [run(args.devices, args.days, args.interval, seed, config) for seed in seeds]
    report(results)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    run_seeds(parser.parse_args())


if __name__ == "__main__":
    main()
