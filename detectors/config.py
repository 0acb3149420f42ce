"""Configuration schema of the detector stage."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from gateway.core import Severity


class LimitRuleConfig(BaseModel):
    """A fixed alarm limit on one metric of one device type."""

    model_config = ConfigDict(extra="forbid")

    device_type: str
    metric: str
    high: float | None = None
    low: float | None = None
    deadband: float = Field(0.0, ge=0)
    on_delay: int = Field(3, ge=1, description="samples beyond the limit before it counts")
    off_delay: int = Field(10, ge=1, description="samples back inside limit - deadband before it clears")
    severity: Severity = Severity.HIGH
    failure_mode: str

    @model_validator(mode="after")
    def _needs_a_limit(self) -> "LimitRuleConfig":
        if self.high is None and self.low is None:
            raise ValueError("a limit rule needs 'high', 'low' or both")
        if self.high is not None and self.low is not None and self.low >= self.high:
            raise ValueError("'low' must be below 'high'")
        return self


class FailureModeConfig(BaseModel):
    """Which ISO 14224 failure mode a deviation of a metric suggests."""

    model_config = ConfigDict(extra="forbid")

    device_type: str
    metric: str
    direction: Literal["up", "down"]
    failure_mode: str
    mechanism: str = ""
    maintainable_item: str = ""


# Built-in limit rules and failure-mode suggestions for the common device types.
# Limits follow ISO 10816-3 vibration zones (7.1 mm/s RMS is the zone C/D
# boundary for medium machines on rigid foundations) and usual bearing and
# winding temperature class limits. Plants override them in their config.
ANY_DEVICE_TYPE = "*"


def default_rules() -> list[LimitRuleConfig]:
    return [
        LimitRuleConfig(device_type=ANY_DEVICE_TYPE, metric="vibration", high=7.1, deadband=0.5, failure_mode="VIB"),
        LimitRuleConfig(device_type=ANY_DEVICE_TYPE, metric="bearing_temp", high=90.0, deadband=3.0, failure_mode="OHE"),
        LimitRuleConfig(device_type="motor", metric="winding_temp", high=130.0, deadband=5.0, failure_mode="OHE"),
        LimitRuleConfig(device_type="compressor", metric="discharge_temp", high=110.0, deadband=4.0, failure_mode="OHE"),
    ]


def default_failure_modes() -> list[FailureModeConfig]:
    def mode(device_type: str, metric: str, direction: str, code: str, mechanism: str, item: str) -> FailureModeConfig:
        return FailureModeConfig(
            device_type=device_type, metric=metric, direction=direction,  # type: ignore[arg-type]
            failure_mode=code, mechanism=mechanism, maintainable_item=item,
        )

    return [
        mode(ANY_DEVICE_TYPE, "vibration", "up", "VIB", "2.4 wear", "bearing"),
        mode(ANY_DEVICE_TYPE, "bearing_temp", "up", "OHE", "2.7 overheating", "bearing"),
        mode(ANY_DEVICE_TYPE, "motor_current", "up", "PDE", "4.4 faulty power", "winding"),
        mode(ANY_DEVICE_TYPE, "motor_current", "down", "LOO", "4.3 no power", "winding"),
        mode("pump", "pressure", "down", "LOO", "2.1 cavitation", "impeller"),
        mode("pump", "flow", "down", "LOO", "5.1 blockage", "impeller"),
        mode("pump", "pressure", "up", "PLU", "5.1 blockage", "piping"),
        mode("motor", "winding_temp", "up", "OHE", "2.7 overheating", "winding"),
        mode("motor", "speed", "down", "LOO", "1.6 sticking", "rotor"),
        mode("compressor", "discharge_temp", "up", "OHE", "2.7 overheating", "valve"),
        mode("compressor", "discharge_pressure", "down", "LOO", "1.1 leakage", "valve"),
    ]


class ModelConfig(BaseModel):
    """The per-device anomaly model, by registered name (see ``detectors.engine.MODELS``)."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["adaptive_baseline", "robust_baseline", "residual_regression", "half_space_trees"] = (
        "adaptive_baseline")
    alpha: float = Field(0.003, gt=0, lt=1, description="robust_baseline: how fast each baseline tracks")
    clip: float = Field(1.0, gt=0, description="robust_baseline: largest step towards a sample, in spreads")
    smoothing: float = Field(0.05, gt=0, le=1, description="robust_baseline: EWMA weight of each deviation")
    scale_samples: int = Field(300, ge=10, description="robust_baseline: normal samples each spread is learned from")
    calibration_samples: int = Field(
        0, ge=0, description="robust_baseline: then samples each metric's own normal variation is learned from, "
        "which becomes its unit (0: every metric in spreads, one shared threshold)")
    min_threshold: float | None = Field(
        None, ge=0, description="alert threshold never below this score (null: the model's own floor)")
    margin: float | None = Field(
        None, ge=1.0, description="the alert gate's margin for this model (null: detectors.margin)")
    decay: float = Field(
        0.002, gt=0, lt=1, description="adaptive_baseline: how fast spreads and channel units follow (per sample)")
    unit_memory_s: float = Field(
        7 * 86400.0, gt=0, description="adaptive_baseline: how long the shift channels' units remember (by time, "
        "so a fault developing over hours does not become normal)")
    relearn_after_s: float = Field(
        3600.0, gt=0, description="adaptive_baseline: a deviation lasting this long becomes the new normal")
    season_period_s: float = Field(86400.0, gt=0, description="adaptive_baseline: the cycle learned (a day)")
    season_bins: int = Field(
        48, ge=0, le=1008, description="adaptive_baseline: bins of the cycle's profile (0: no seasonal profile, "
        "saves 8 bytes a bin per metric)")
    lag_samples: float = Field(120.0, ge=1, description="residual_regression: thermal lag, in samples")
    n_trees: int = Field(10, ge=1, description="half_space_trees only")
    height: int = Field(8, ge=2, description="half_space_trees only")
    window_size: int = Field(250, ge=10, description="half_space_trees only")
    seed: int = 42


class ForecastConfig(BaseModel):
    """Trend forecasts towards each limit rule's limit: predictive anomalies with a due date."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    window_samples: int = Field(120, ge=5, le=10_000, description="samples the trend is fitted over")
    margin: float = Field(2.0, ge=1.0, description="x the steepest healthy slopes (99th percentile) seen in warm-up")
    horizon_s: float = Field(7 * 86400.0, gt=0, description="forecast only crossings this close")
    # A quarter of the window: a load excursion that turns within minutes is not a trend (at 10 samples,
    # three set-point raises in a row on a simulated compressor were forecast to cross its limit).
    persistence: int = Field(30, ge=1, description="samples in a row the forecast must hold")


class StuckConfig(BaseModel):
    """Flat-lining sensors: the same value this many samples in a row from a signal that moved in warm-up."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    samples: int = Field(600, ge=3, description="10 min at 1 Hz: long enough for a quantised, steady value")
    tolerance: float = Field(0.0, ge=0, description="changes this small count as the same value")


class RateRuleConfig(BaseModel):
    """A metric must not move faster than this (per second) on this device type."""

    model_config = ConfigDict(extra="forbid")

    device_type: str
    metric: str
    max_per_s: float = Field(gt=0)
    on_delay: int = Field(2, ge=1)
    off_delay: int = Field(10, ge=1)
    severity: Severity = Severity.MEDIUM
    failure_mode: str = Field(pattern=r"^[A-Z]{3}$")


class DriftConfig(BaseModel):
    """Sensor drift: one metric's model residual shifting for good (river's ADWIN) while the others hold.

    It watches the residuals of ``residual_regression`` (each metric against what the others
    imply), so it runs on the device types that use that model."""

    model_config = ConfigDict(extra="forbid")

    # Off by default: on the simulator's healthy pumps the residuals wander up to ~1.8 spreads for
    # a while (thermal lags), so a fleet-wide default would need a quality evaluation first.
    enabled: bool = False
    delta: float = Field(0.002, gt=0, lt=1, description="ADWIN confidence")
    min_shift: float = Field(1.5, gt=0, description="lasting shift of the residual, in its usual spreads")


class DetectorConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: ModelConfig = Field(default_factory=ModelConfig)
    device_type_models: dict[str, ModelConfig] = Field(
        default_factory=dict, description="another model for these device types (by type name)")
    workers: int = Field(
        0, ge=0, le=64,
        description="worker processes the devices are sharded across; 0 scores in the gateway process",
    )
    warmup_samples: int = Field(1800, ge=10, description="samples per device before any alert...")
    warmup_s: float = Field(
        86400.0, gt=0, description="...or this long, whichever comes first (30 min at 1 Hz, a day at 5 min)")
    quantile: float = Field(0.995, gt=0.5, lt=1.0, description="quantile-calibrated models: the normal score")
    margin: float = Field(2.0, ge=1.0, description="threshold = quantile of normal scores x margin")
    persistence_k: int | None = Field(
        None, ge=1, description="on-delay: K of the last M samples over threshold (null: the model's own)")
    persistence_m: int | None = Field(None, ge=1)
    clear_after: int | None = Field(
        None, ge=1, description="off-delay: samples back under threshold (null: the model's own)")
    evidence_samples: int = Field(30, ge=1, le=1000)
    rules: list[LimitRuleConfig] = Field(default_factory=default_rules)
    failure_modes: list[FailureModeConfig] = Field(default_factory=default_failure_modes)
    forecast: ForecastConfig = Field(default_factory=ForecastConfig)
    stuck: StuckConfig = Field(default_factory=StuckConfig)
    drift: DriftConfig = Field(default_factory=DriftConfig)
    rate_rules: list[RateRuleConfig] = Field(default_factory=list)
    checkpoint_path: Path | None = Field(
        Path("data/detectors.ckpt"), description="model state saved here (null: not saved); workers add a suffix")
    checkpoint_interval_s: float = Field(300.0, gt=0, description="also saved on shutdown")

    @model_validator(mode="after")
    def _k_within_m(self) -> "DetectorConfig":
        if (self.persistence_k is None) != (self.persistence_m is None):
            raise ValueError("persistence_k and persistence_m go together")
        if self.persistence_k is not None and self.persistence_k > self.persistence_m:
            raise ValueError("persistence_k must not exceed persistence_m")
        return self

    @model_validator(mode="after")
    def _learning_within_warmup(self) -> "DetectorConfig":
        # A metric's unit learned after the warm-up would be learned from samples already alerted on.
        models = {"model": self.model, **{f"device_type_models.{k}": v for k, v in self.device_type_models.items()}}
        for where, model in models.items():
            learning = model.scale_samples + model.calibration_samples
            if model.type == "robust_baseline" and model.calibration_samples and learning > self.warmup_samples:
                raise ValueError(f"{where}: scale_samples + calibration_samples ({learning}) must fit in "
                                 f"warmup_samples ({self.warmup_samples})")
        return self

