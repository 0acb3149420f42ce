"""Per-device detection: every good reading goes through limit rules and the device's model.

Readings of one device that share a timestamp form one sample (one feature
dict); the model scores each sample with the device's latest value of every
metric, so devices that publish metrics separately still get a full vector.
"""

from __future__ import annotations

import logging
import math
import pickle
import threading
import time
from collections import Counter
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable

from detectors import checkpoint
from detectors.adaptive import AdaptiveBaseline
from detectors.alerting import AdaptiveThreshold
from detectors.base import Detector
from detectors.config import ANY_DEVICE_TYPE, DetectorConfig, FailureModeConfig, ModelConfig, RateRuleConfig
from detectors.drift import SensorDrift
from detectors.evidence import EvidenceWindow
from detectors.forecast import TrendForecast
from detectors.rate import RateOfChange
from detectors.stuck import StuckSensor
from detectors.hst import ScaledHalfSpaceTrees
from detectors.residual import ResidualRegression
from detectors.robust import RobustBaseline
from detectors.threshold import LimitRule
from gateway.core import Anomaly, Reading, Severity

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class ModelEntry:
    """A model registered by config name, with the version recorded on each anomaly it raises."""

    version: str
    build: Callable[[ModelConfig], Detector]
    # Scores of spread-unit models under this are noise whatever the warm-up's quantile says.
    min_threshold: float
    # Whether its contributions are residuals against the other metrics (what sensor drift watches).
    residuals: bool = False
    # Scores already in units of the alert limit (1): no quantile calibration in the warm-up.
    self_calibrated: bool = False
    # The gate's on-delay (K of M) and off-delay unless the configuration sets them.
    persistence: tuple[int, int, int] = (8, 10, 30)


MODELS: dict[str, ModelEntry] = {
    # Spikes alert on the sample itself, so no on-delay; the shift channels are smoothed already.
    "adaptive_baseline": ModelEntry(
        "adaptive-baseline-3", lambda cfg: AdaptiveBaseline(
            cfg.alpha, cfg.clip, cfg.decay, cfg.scale_samples, cfg.relearn_after_s, cfg.season_period_s,
            cfg.season_bins, cfg.unit_memory_s), 1.0, self_calibrated=True, persistence=(1, 1, 20)),
    "robust_baseline": ModelEntry(
        "robust-baseline-2", lambda cfg: RobustBaseline(cfg.alpha, cfg.clip, cfg.smoothing, cfg.scale_samples,
                                                        cfg.calibration_samples), 3.5),
    "residual_regression": ModelEntry(
        "residual-regression-1", lambda cfg: ResidualRegression(cfg.lag_samples), 0.0, residuals=True),
    "half_space_trees": ModelEntry("hst-1", lambda cfg: ScaledHalfSpaceTrees(
        n_trees=cfg.n_trees, height=cfg.height, window_size=cfg.window_size, seed=cfg.seed), 0.0),
}
RULE_DETECTOR = "limit"
FORECAST_DETECTOR = "forecast-1"
STUCK_DETECTOR = "stuck-1"
RATE_DETECTOR = "rate-1"
DRIFT_DETECTOR = "sensor-drift-1"
# ISO 14224 mechanism and maintainable item of instrument findings.
SENSOR_FAULT = ("3.3 faulty signal", "sensor")
SENSOR_DRIFT = ("3.4 out of adjustment", "sensor")
FALLBACK_FAILURE_MODE = "PDE"
# A standard score this far out makes a model anomaly HIGH rather than MEDIUM.
HIGH_SEVERITY_Z = 6.0
# This many readings in a row older than the device's newest: its clock was set back (or one reading
# came from the future), so its new timeline is followed rather than every later reading refused.
RESYNC_AFTER = 10
# A device whose readings were refused this recently is degraded (in /health and the dashboard).
DEGRADED_FOR_S = 600.0
OUT_OF_ORDER = "out_of_order"
NOT_GOOD_QUALITY = "not_good_quality"
CLOCK_RESET = "clock_reset"


@dataclass(slots=True)
class MetricChecks:
    """The checks one metric of one device runs: held together so a stream costs one dict entry."""

    rules: tuple[LimitRule, ...]
    forecasts: tuple[tuple[LimitRule, TrendForecast], ...]
    rates: tuple[tuple[RateRuleConfig, RateOfChange], ...]
    stuck: StuckSensor | None


@dataclass(slots=True)
class DeviceState:
    device_type: str
    model: Detector
    gate: AdaptiveThreshold
    evidence: EvidenceWindow
    checks: dict[str, MetricChecks] = field(default_factory=dict)
    drift: SensorDrift | None = None
    features: dict[str, float] = field(default_factory=dict)
    last_timestamp: float = float("-inf")
    # Readings in a row older than last_timestamp: enough of them and the device's clock went back for good.
    behind: int = 0


# What a checkpoint must match to be loaded into this code.
STATE_LAYOUT = sorted(f.name for f in fields(DeviceState))


def _alerting(state: DeviceState) -> bool:
    """The model's gate or a limit rule of the device is raised."""
    return state.gate.active or any(rule.active for checks in state.checks.values() for rule in checks.rules)


def model_config_of(config: DetectorConfig, device_type: str) -> ModelConfig:
    return config.device_type_models.get(device_type, config.model)


def gate_of(config: DetectorConfig, model_config: ModelConfig, warmup: int) -> AdaptiveThreshold:
    """The alert gate of one device: the detectors' settings, with the model's own floor and margin."""
    entry = MODELS[model_config.type]
    floor = model_config.min_threshold
    if floor is None:
        floor = entry.min_threshold
    k, m, clear_after = entry.persistence
    if config.persistence_k is not None and config.persistence_m is not None:
        k, m = config.persistence_k, config.persistence_m
    return AdaptiveThreshold(
        warmup=warmup, quantile=config.quantile,
        margin=config.margin if model_config.margin is None else model_config.margin,
        k=k, m=m, clear_after=clear_after if config.clear_after is None else config.clear_after, floor=floor,
        warmup_s=config.warmup_s, self_calibrated=entry.self_calibrated,
    )


# What a device's model and gate are built from, and what only its per-metric checks use: a change of the
# first starts the device's learning over, a change of the second only rebuilds its checks.
_CHECK_SETTINGS = ("rules", "rate_rules", "forecast", "stuck")
_NOT_PER_DEVICE = ("failure_modes", "workers", "checkpoint_path", "checkpoint_interval_s", "device_type_models",
                   "model")


def model_settings(config: DetectorConfig, device_type: str) -> dict[str, Any]:
    settings = config.model_dump(exclude=set(_CHECK_SETTINGS + _NOT_PER_DEVICE))
    return settings | {"model": model_config_of(config, device_type).model_dump()}


def check_settings(config: DetectorConfig, device_type: str) -> dict[str, Any]:
    def applies(rule: Any) -> bool:
        return rule.device_type in (device_type, ANY_DEVICE_TYPE)

    return {"rules": [rule.model_dump() for rule in config.rules if applies(rule)],
            "rate_rules": [rule.model_dump() for rule in config.rate_rules if applies(rule)],
            "forecast": config.forecast.model_dump(), "stuck": config.stuck.model_dump(),
            "warmup_samples": config.warmup_samples}


def state_format(model_version: str) -> str:
    return f"{model_version}|{','.join(STATE_LAYOUT)}"


def models_version(config: DetectorConfig) -> str:
    """The versions of every model this configuration uses, as one string a checkpoint must match."""
    default = MODELS[config.model.type].version
    per_type = [f"{device_type}={MODELS[model.type].version}"
                for device_type, model in sorted(config.device_type_models.items())]
    return ",".join([default, *per_type])


class DetectorEngine:
    """Scores readings of known devices; returns the anomalies they raise.

    >>> from detectors.config import DetectorConfig
    >>> engine = DetectorEngine(DetectorConfig(warmup_samples=20), {"pump-1": "pump"})
    >>> engine.process([Reading("pump-1", "vibration", 9.0, float(t)) for t in range(3)])[0].failure_mode
    'VIB'
    """

    def __init__(self, config: DetectorConfig, device_types: dict[str, str], checkpoint_path: Path | None = None) -> None:
        self.config = config
        self.device_types = device_types
        self.devices: dict[str, DeviceState] = {}
        self.checkpoint_path = checkpoint_path
        self.checkpoints = 0
        self._last_checkpoint = time.monotonic()
        self.rejected: Counter[str] = Counter()
        # device -> reason -> [count, wall-clock time of the last, an example]: what /health names.
        self.rejections: dict[str, dict[str, list[Any]]] = {}
        self.samples = 0
        self.anomalies = 0
        self._modes = {(m.device_type, m.metric, m.direction): m for m in config.failure_modes}
        # Not checkpointed: shown by the dashboard, known again from the next sample after a restart.
        self.last_scores: dict[str, float] = {}
        self.model_version = models_version(config)
        # process() and reconfigure() one at a time: a settings change lands between two batches.
        self._lock = threading.Lock()
        if checkpoint_path is not None:
            restored = checkpoint.load(checkpoint_path, self.model_version, STATE_LAYOUT)
            if restored:
                self.devices = {device: state for device, state in restored.items() if device in device_types}

    def _state(self, device_id: str) -> DeviceState | None:
        state = self.devices.get(device_id)
        if state is not None:
            return state
        device_type = self.device_types.get(device_id)
        if device_type is None:
            return None
        cfg = self.config
        model_config = model_config_of(cfg, device_type)
        entry = MODELS[model_config.type]
        state = DeviceState(
            device_type=device_type,
            model=entry.build(model_config),
            gate=gate_of(cfg, model_config, cfg.warmup_samples),
            evidence=EvidenceWindow(cfg.evidence_samples),
            drift=(SensorDrift(cfg.drift.delta, cfg.drift.min_shift)
                   if cfg.drift.enabled and entry.residuals else None),
        )
        self.devices[device_id] = state
        return state

    def reconfigure(self, config: DetectorConfig, device_types: dict[str, str]) -> dict[str, list[str]]:
        """New settings, without a restart: a device whose model settings changed (or whose type did, or
        that is gone) starts learning over; one whose rules changed keeps its learning and gets new
        checks; every other device keeps its state as it is. Which devices were which."""
        with self._lock:
            reset, rechecked = [], []
            for device_id, state in list(self.devices.items()):
                device_type = device_types.get(device_id)
                if device_type is None or device_type != state.device_type or (
                        model_settings(self.config, state.device_type) != model_settings(config, device_type)):
                    del self.devices[device_id]
                    reset.append(device_id)
                elif check_settings(self.config, device_type) != check_settings(config, device_type):
                    rechecked.append(device_id)
            self.config, self.device_types = config, device_types
            self._modes = {(m.device_type, m.metric, m.direction): m for m in config.failure_modes}
            self.model_version = models_version(config)
            for device_id in rechecked:
                state = self.devices[device_id]
                state.checks = {metric: self._watch(state, metric) for metric in state.checks}
            return {"reset": sorted(reset), "rechecked": sorted(rechecked)}

    def process(self, readings: list[Reading]) -> list[Anomaly]:
        with self._lock:
            return self._process(readings)

    def _process(self, readings: list[Reading]) -> list[Anomaly]:
        anomalies: list[Anomaly] = []
        samples: dict[tuple[str, float], dict[str, float]] = {}
        for reading in readings:
            state = self._state(reading.device_id)
            if state is None:
                self.rejected["unknown_device"] += 1
                continue
            if not reading.is_scorable():
                self._reject(reading.device_id, NOT_GOOD_QUALITY, f"{reading.metric} quality {reading.quality.value}")
                continue
            if reading.timestamp < state.last_timestamp:
                state.behind += 1
                if state.behind < RESYNC_AFTER:
                    self._reject(reading.device_id, OUT_OF_ORDER,
                                 f"{reading.metric} at {reading.timestamp:.3f}, newest {state.last_timestamp:.3f}")
                    continue
                self._reject(reading.device_id, CLOCK_RESET,
                             f"followed from {state.last_timestamp:.3f} back to {reading.timestamp:.3f}", refused=False)
            state.behind = 0
            state.last_timestamp = reading.timestamp
            checks = self._remember(state, reading)
            for rule in checks.rules:
                if rule.update(reading.value) == "raise":
                    anomalies.append(self._rule_anomaly(reading, state, rule))
            stuck = checks.stuck
            if stuck is not None and stuck.update(reading.value) == "raise":
                anomalies.append(self._stuck_anomaly(reading, state, stuck))
            if checks.rates:
                anomalies += self._rate_checks(reading, state, checks)
            for rule, forecast in checks.forecasts:
                due = forecast.update(reading.timestamp, reading.value)
                if due is not None and not rule.active:
                    anomalies.append(self._forecast_anomaly(reading, state, rule, forecast, due))
            key = (reading.device_id, reading.timestamp)
            sample = samples.get(key)
            if sample is None:
                sample = samples[key] = {}
            sample[reading.metric] = reading.value

        for (device_id, timestamp), values in samples.items():
            anomalies += self._score_sample(device_id, timestamp, values)
        self.anomalies += len(anomalies)
        if time.monotonic() - self._last_checkpoint >= self.config.checkpoint_interval_s:
            self.checkpoint()
        return anomalies

    def _reject(self, device_id: str, reason: str, example: str, refused: bool = True) -> None:
        if refused:
            self.rejected[reason] += 1
        entry = self.rejections.setdefault(device_id, {}).get(reason)
        if entry is None:
            entry = self.rejections[device_id][reason] = [0, 0.0, ""]
        entry[0] += 1
        entry[1] = time.time()
        entry[2] = example

    def degraded(self, device_id: str, now: float | None = None) -> bool:
        """Readings of the device were refused (or its clock followed back) in the last DEGRADED_FOR_S."""
        now = time.time() if now is None else now
        return any(now - last_at <= DEGRADED_FOR_S for _, last_at, _ in self.rejections.get(device_id, {}).values())

    def checkpoint(self) -> None:
        """Save every device's model state (when a checkpoint path is configured)."""
        self._last_checkpoint = time.monotonic()
        if self.checkpoint_path is None:
            return
        try:
            checkpoint.save(self.checkpoint_path, self.model_version, STATE_LAYOUT, self.devices)
            self.checkpoints += 1
        except OSError as error:
            log.error("detector checkpoint %s not written: %s", self.checkpoint_path, error)

    def _remember(self, state: DeviceState, reading: Reading) -> MetricChecks:
        checks = state.checks.get(reading.metric)
        if checks is None:
            state.features[reading.metric] = reading.value
            checks = state.checks[reading.metric] = self._watch(state, reading.metric)
        state.evidence.append(reading)
        return checks

    def _watch(self, state: DeviceState, metric: str) -> MetricChecks:
        """The per-metric checks of a metric the device just started sending (none for metrics it never sends)."""
        cfg = self.config

        def applies(device_type: str, rule_metric: str) -> bool:
            return rule_metric == metric and device_type in (state.device_type, ANY_DEVICE_TYPE)

        rules = tuple(LimitRule(rule) for rule in cfg.rules if applies(rule.device_type, rule.metric))
        forecasts = tuple((rule, TrendForecast(limit, direction, cfg.forecast.window_samples, cfg.warmup_samples,
                                               cfg.forecast.margin, cfg.forecast.horizon_s, cfg.forecast.persistence))
                          for rule in rules
                          for limit, direction in ((rule.config.high, "up"), (rule.config.low, "down"))
                          if limit is not None and cfg.forecast.enabled)
        rates = tuple((rule, RateOfChange(rule.max_per_s, rule.on_delay, rule.off_delay))
                      for rule in cfg.rate_rules if applies(rule.device_type, rule.metric))
        stuck = StuckSensor(cfg.stuck.samples, cfg.stuck.tolerance, cfg.warmup_samples) if cfg.stuck.enabled else None
        return MetricChecks(rules, forecasts, rates, stuck)

    def _score_sample(self, device_id: str, timestamp: float, values: dict[str, float]) -> list[Anomaly]:
        state = self.devices[device_id]
        state.features.update(values)
        x = dict(state.features)
        self.samples += 1
        score = state.model.score_one(x, timestamp)
        self.last_scores[device_id] = score
        edge = state.gate.update(score, timestamp)
        if state.gate.is_normal(score):
            state.model.learn_one(x, timestamp)
        found = [self._model_anomaly(device_id, timestamp, state, x, score)] if edge == "raise" else []
        if state.drift is not None and not state.gate.warming_up:
            drifted = state.drift.update(state.model.contributions())
            if drifted is not None:
                found.append(self._drift_anomaly(device_id, timestamp, state, *drifted))
        return found

    def _model_anomaly(self, device_id: str, timestamp: float, state: DeviceState, x: dict[str, float],
                       score: float) -> Anomaly:
        shares = state.model.contributions()
        ranked = sorted(shares, key=lambda name: abs(shares[name]), reverse=True) or sorted(x)
        top = ranked[0]
        top_share = shares.get(top, 0.0)
        direction = "up" if top_share >= 0 else "down"
        mode = self._failure_mode(state.device_type, top, direction)
        severity = Severity.HIGH if abs(top_share) >= HIGH_SEVERITY_Z else Severity.MEDIUM
        contributors = [name for name in ranked if abs(shares.get(name, 0.0)) >= 2.0] or [top]
        return Anomaly(
            device_id=device_id,
            detected_at=timestamp,
            detector=MODELS[model_config_of(self.config, state.device_type).type].version,
            score=score,
            severity=severity,
            failure_mode=mode.failure_mode if mode else FALLBACK_FAILURE_MODE,
            failure_mechanism=mode.mechanism if mode else "",
            maintainable_item=mode.maintainable_item if mode else "",
            metrics=contributors,
            message=(
                f"{top} {direction} ({top_share:+.1f} sd from expected); "
                f"score {score:.3f} over threshold {state.gate.threshold:.3f}"
            ),
            evidence=state.evidence.readings(device_id),
        )

    def _rule_anomaly(self, reading: Reading, state: DeviceState, rule: LimitRule) -> Anomaly:
        mode = self._failure_mode(state.device_type, reading.metric, rule.last_direction)
        return self._finding(reading.device_id, reading.timestamp, reading.metric, state, RULE_DETECTOR,
                             rule.config.severity, rule.config.failure_mode, mode, rule.describe(reading.value),
                             reading.value, limit=rule.config.high if rule.last_direction == "up" else rule.config.low)

    def _stuck_anomaly(self, reading: Reading, state: DeviceState, stuck: StuckSensor) -> Anomaly:
        return self._finding(
            reading.device_id, reading.timestamp, reading.metric, state, STUCK_DETECTOR, Severity.LOW,
            "AIR", SENSOR_FAULT, f"{reading.metric} stuck at {reading.value:.6g} for {stuck.repeats} samples",
            reading.value)

    def _rate_checks(self, reading: Reading, state: DeviceState, checks: MetricChecks) -> list[Anomaly]:
        """A metric moving too fast."""
        found = []
        for rule, rate in checks.rates:
            if rate.update(reading.timestamp, reading.value) == "raise":
                mode = self._failure_mode(state.device_type, reading.metric, "up" if rate.rate > 0 else "down")
                found.append(self._finding(
                    reading.device_id, reading.timestamp, reading.metric, state, RATE_DETECTOR, rule.severity,
                    rule.failure_mode, mode, f"{reading.metric} changing at {rate.rate:+.3g}/s, "
                    f"limit {rule.max_per_s:g}/s", rate.rate))
        return found

    def _drift_anomaly(self, device_id: str, timestamp: float, state: DeviceState, metric: str,
                       level: float) -> Anomaly:
        word = "high" if level > 0 else "low"
        return self._finding(
            device_id, timestamp, metric, state, DRIFT_DETECTOR, Severity.LOW, "AIR", SENSOR_DRIFT,
            f"{metric} sensor drifting {word}: it reads {abs(level):.1f} usual spreads {word} of what "
            "the machine's other metrics imply", level)

    def _forecast_anomaly(
        self, reading: Reading, state: DeviceState, rule: LimitRule, forecast: TrendForecast, due: float,
    ) -> Anomaly:
        direction = "up" if forecast.sign > 0 else "down"
        hours = (due - reading.timestamp) / 3600
        return self._finding(
            reading.device_id, reading.timestamp, reading.metric, state, FORECAST_DETECTOR,
            # Caught early is incipient: urgent only when the crossing is close.
            Severity.MEDIUM if hours < 24 else Severity.LOW, rule.config.failure_mode,
            self._failure_mode(state.device_type, reading.metric, direction),
            f"{reading.metric} trending {direction} at {forecast.slope * 3600:+.3g}/h: "
            f"will cross {forecast.limit:g} in {hours:.1f} h", forecast.slope, due_at=due, limit=forecast.limit)

    @staticmethod
    def _finding(device_id: str, at: float, metric: str, state: DeviceState, detector: str, severity: Severity,
                 failure_mode: str, coding: FailureModeConfig | tuple[str, str] | None, message: str,
                 score: float, due_at: float | None = None, limit: float | None = None) -> Anomaly:
        """A one-metric anomaly; ``coding`` gives mechanism and maintainable item (a mapping, or the pair)."""
        if isinstance(coding, FailureModeConfig):
            coding = (coding.mechanism, coding.maintainable_item)
        mechanism, item = coding or ("", "")
        return Anomaly(device_id=device_id, detected_at=at, detector=detector, score=score, severity=severity,
                       failure_mode=failure_mode, failure_mechanism=mechanism, maintainable_item=item,
                       metrics=[metric], message=message, evidence=state.evidence.readings(device_id), due_at=due_at,
                       limit=limit)

    def _failure_mode(self, device_type: str, metric: str, direction: str) -> FailureModeConfig | None:
        return self._modes.get((device_type, metric, direction)) or self._modes.get(
            (ANY_DEVICE_TYPE, metric, direction)
        )

    def summaries(self) -> dict[str, tuple[bool, bool, bool]]:
        """(warming up, alerting, degraded) of every device scored so far: what the fleet view shows."""
        now = time.time()
        return {device: (state.gate.warming_up, _alerting(state), self.degraded(device, now))
                for device, state in self.devices.items()}

    def device_status(self, device_id: str) -> dict[str, Any] | None:
        """Warm-up progress, the calibrated threshold, the latest score and each metric's deviation,
        and the limit rules that apply; None for a device this engine does not score."""
        device_type = self.device_types.get(device_id)
        if device_type is None:
            return None
        limits = [{"metric": rule.metric, "low": rule.low, "high": rule.high, "failure_mode": rule.failure_mode}
                  for rule in self.config.rules if rule.device_type in (device_type, ANY_DEVICE_TYPE)]
        status: dict[str, Any] = {
            "device_id": device_id, "model": MODELS[model_config_of(self.config, device_type).type].version,
            "warming_up": True, "samples": 0, "warmup_samples": self.config.warmup_samples, "threshold": None,
            "score": self.last_scores.get(device_id), "alerting": False, "contributions": {}, "limits": limits,
            "warmup_s": self.config.warmup_s, "degraded": self.degraded(device_id),
            "rejected": self._rejections_of(device_id),
        }
        state = self.devices.get(device_id)
        if state is None:
            return status
        gate = state.gate
        calibrated = not gate.warming_up and math.isfinite(gate.threshold)
        return status | {
            "warming_up": gate.warming_up, "samples": gate.seen, "warmup_samples": gate.warmup,
            "threshold": gate.threshold if calibrated else None, "alerting": _alerting(state),
            "contributions": {name: value for name, value in state.model.contributions().items()
                              if math.isfinite(value)},
        }

    def _rejections_of(self, device_id: str) -> dict[str, dict[str, Any]]:
        return {reason: {"count": count, "last_at": last_at, "example": example}
                for reason, (count, last_at, example) in self.rejections.get(device_id, {}).items()}

    def state_format(self) -> str:
        """What a state exported by :meth:`export_states` is only good for: this model version and layout."""
        return state_format(self.model_version)

    def export_states(self, device_ids: list[str]) -> dict[str, bytes]:
        """The model state of each of these devices that has one, pickled between two batches (another
        gateway taking a device over continues from it)."""
        with self._lock:
            return {device: pickle.dumps(self.devices[device], protocol=pickle.HIGHEST_PROTOCOL)
                    for device in device_ids if device in self.devices}

    def adopt_states(self, states: dict[str, bytes]) -> list[str]:
        """Continue these devices from exported states (of :meth:`state_format`); the devices adopted.
        Only from the gateway's own cluster database: a pickle runs code when it is loaded."""
        with self._lock:
            adopted = []
            for device, blob in states.items():
                if device in self.device_types:
                    self.devices[device] = pickle.loads(blob)
                    adopted.append(device)
            return sorted(adopted)

    def forget(self, device_ids: list[str]) -> None:
        """Drop these devices' state (another gateway owns them now)."""
        with self._lock:
            for device in device_ids:
                self.devices.pop(device, None)
                self.last_scores.pop(device, None)

    def close(self) -> None:
        """Save the state for the next start."""
        self.checkpoint()

    def diagnostics(self) -> dict[str, Any]:
        return {
            "devices": len(self.devices),
            "warming_up": sum(1 for state in self.devices.values() if state.gate.warming_up),
            "samples_scored": self.samples,
            "anomalies": self.anomalies,
            "rejected": dict(self.rejected),
            "rejected_by_device": {device: self._rejections_of(device) for device in sorted(self.rejections)},
            "checkpoints": self.checkpoints,
        }
