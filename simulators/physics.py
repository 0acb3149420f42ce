"""Device physics and fault models shared by every simulator.

Each device follows a load cycle (a slow sine plus random set-point changes);
its metrics are correlated through the load and through slow thermal lags, with
Gaussian measurement noise. Faults grow a severity from 0 at onset to 1 at the
failure point and bend the physics the way the real failure would.

The site and the model matter: a site's ``ambient_c`` is the temperature
everything cools towards, and its ``humidity_pct`` above 60 % speeds up how
fast a fault grows (moisture in bearings and seals). Each model has its own
design constants (baseline vibration, thermal gain, rated flow, how fast it
wears), the same for every unit of that model. A repair, or a fault given an
end, clears it: the metrics return to healthy (temperatures through their
thermal lag).

Everything is driven by a seeded ``random.Random`` and the simulated time, so a
scenario replays identically.

>>> device = DeviceModel(DeviceSpec("pump-1", "pump", "north"), seed=7)
>>> healthy = device.step(1.0)
>>> sorted(healthy)
['bearing_temp', 'flow', 'motor_current', 'pressure', 'vibration']
>>> device.inject(Fault("pump-1", "bearing_wear", onset=10.0, duration=100.0))
>>> for t in range(2, 111):
...     failing = device.step(float(t))
>>> failing["vibration"] > 7.1
True
>>> device.repair(111.0)
>>> for t in range(112, 400):
...     repaired = device.step(float(t))
>>> repaired["vibration"] < 4
True

A humid site wears the same fault faster:

>>> humid = DeviceModel(DeviceSpec("pump-2", "pump", "south", environment={"humidity_pct": 85}), seed=7)
>>> humid.wear_rate
1.5
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from dataclasses import dataclass, field

DEVICE_TYPES = ("pump", "motor", "compressor")
FAULT_KINDS = ("bearing_wear", "overheating", "cavitation")
AMBIENT_C = 25.0
LOAD_PERIOD_S = 1200.0
# Thermal time constant of a bearing housing, in simulated seconds.
THERMAL_TAU_S = 120.0
SETPOINT_CHANGE_PER_S = 1 / 900
SETPOINT_RAMP_S = 60.0


# Humidity above this speeds wear up by HUMIDITY_WEAR_PER_PCT per percentage point.
HUMIDITY_WEAR_ONSET_PCT = 60.0
HUMIDITY_WEAR_PER_PCT = 0.02


@dataclass(frozen=True, slots=True)
class DeviceSpec:
    id: str
    type: str
    site: str
    model: str = ""
    # The site's numeric environment (ambient_c, humidity_pct, ...), as the gateway's config has it.
    environment: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ModelProfile:
    """A model's design constants: every unit of one model shares them; an unnamed model is nominal."""

    vibration_base: float = 1.6
    thermal_gain: float = 30.0
    rated_flow: float = 130.0
    wear_rate: float = 1.0

    @classmethod
    def of(cls, device_type: str, model: str) -> "ModelProfile":
        """
        >>> ModelProfile.of("pump", "") == ModelProfile()
        True
        >>> ModelProfile.of("pump", "P-200") == ModelProfile.of("pump", "P-200") != ModelProfile.of("pump", "P-300")
        True
        """
        if not model:
            return cls()
        # Seeded by the model's name (not the device's seed), so the units of a model agree.
        rng = random.Random(f"{device_type}/{model}")
        return cls(vibration_base=1.6 * rng.uniform(0.8, 1.2), thermal_gain=30.0 * rng.uniform(0.85, 1.15),
                   rated_flow=130.0 * rng.uniform(0.7, 1.3), wear_rate=rng.uniform(0.8, 1.25))


@dataclass(slots=True)
class Fault:
    device_id: str
    kind: str
    onset: float
    duration: float
    # When it was repaired (or cleared on its own, e.g. a cavitating pump whose strainer was backflushed).
    cleared_at: float | None = None

    @property
    def failure_at(self) -> float:
        return self.onset + self.duration

    def severity(self, t: float, rate: float = 1.0) -> float:
        """0 before onset and after it cleared; grows to 1 at the failure point (sooner at ``rate`` > 1)."""
        if t <= self.onset or (self.cleared_at is not None and t >= self.cleared_at):
            return 0.0
        # Wear accelerates: slow at first, fast near the failure point.
        return min(1.0, (rate * (t - self.onset) / self.duration) ** 1.5)


class DeviceModel:
    def __init__(self, spec: DeviceSpec, seed: int) -> None:
        if spec.type not in DEVICE_TYPES:
            raise ValueError(f"device {spec.id!r}: unknown type {spec.type!r}; known: {', '.join(DEVICE_TYPES)}")
        self.spec = spec
        self.profile = ModelProfile.of(spec.type, spec.model)
        self.ambient_c = float(spec.environment.get("ambient_c", AMBIENT_C))
        humidity = float(spec.environment.get("humidity_pct", HUMIDITY_WEAR_ONSET_PCT))
        self.wear_rate = round(self.profile.wear_rate
                               * (1 + HUMIDITY_WEAR_PER_PCT * max(0.0, humidity - HUMIDITY_WEAR_ONSET_PCT)), 6)
        self.rng = random.Random(seed)
        self.phase = self.rng.uniform(0, 2 * math.pi)
        self.setpoint = self.rng.uniform(0.55, 0.75)
        self.target_setpoint = self.setpoint
        self.faults: list[Fault] = []
        self.bearing_temp = self.ambient_c + self.profile.thermal_gain * self.setpoint
        self.hot_temp = self.ambient_c + 60 * self.setpoint
        self.last_t: float | None = None

    def inject(self, fault: Fault) -> None:
        if fault.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault {fault.kind!r}; known: {', '.join(FAULT_KINDS)}")
        self.faults.append(fault)

    def failure_time(self, fault: Fault) -> float:
        """When ``fault`` reaches its failure point on this device (its site and model set the pace)."""
        return fault.onset + fault.duration / self.wear_rate

    def repair(self, t: float) -> None:
        """Every fault active at ``t`` is cleared from then on (a work order closed as fixed)."""
        for fault in self.faults:
            if fault.onset <= t and (fault.cleared_at is None or fault.cleared_at > t):
                fault.cleared_at = t

    def _severity(self, kind: str, t: float) -> float:
        return max((fault.severity(t, self.wear_rate) for fault in self.faults if fault.kind == kind), default=0.0)

    def load(self, t: float, dt: float) -> float:
        # Operators nudge the set-point now and then and the controller ramps to
        # it; the sine is the demand swing.
        if self.rng.random() < SETPOINT_CHANGE_PER_S * dt:
            self.target_setpoint = min(0.8, max(0.5, self.setpoint + self.rng.uniform(-0.12, 0.12)))
        self.setpoint += (self.target_setpoint - self.setpoint) * (1 - math.exp(-dt / SETPOINT_RAMP_S))
        return min(1.0, max(0.2, self.setpoint + 0.15 * math.sin(2 * math.pi * t / LOAD_PERIOD_S + self.phase)))

    def _lag(self, current: float, target: float, dt: float) -> float:
        return current + (target - current) * (1 - math.exp(-dt / THERMAL_TAU_S))

    def step(self, t: float) -> dict[str, float]:
        """Metrics at simulated time ``t`` (seconds since the simulation started)."""
        dt = 1.0 if self.last_t is None else max(0.0, t - self.last_t)
        self.last_t = t
        load = self.load(t, dt)
        wear = self._severity("bearing_wear", t)
        heat = self._severity("overheating", t)
        cavitation = self._severity("cavitation", t)
        noise = self.rng.gauss

        profile = self.profile
        vibration = profile.vibration_base + 0.9 * load + 6.5 * wear + 2.0 * cavitation + noise(0, 0.08 * (1 + 3 * cavitation))
        self.bearing_temp = self._lag(self.bearing_temp, self.ambient_c + profile.thermal_gain * load
                                      + 45 * wear + 50 * heat, dt)
        current = 18 + 32 * load + 4 * wear + 5 * heat
        metrics = {
            "vibration": max(0.0, vibration),
            "bearing_temp": self.bearing_temp + noise(0, 0.15),
            "motor_current": current + noise(0, 0.3),
        }
        if self.spec.type == "pump":
            metrics["flow"] = profile.rated_flow * load * (1 - 0.25 * cavitation) + noise(0, 1.2)
            metrics["pressure"] = 1.5 + 4.5 * load**2 - 1.6 * cavitation + noise(0, 0.04)
        elif self.spec.type == "motor":
            self.hot_temp = self._lag(self.hot_temp, self.ambient_c + 60 * load + 70 * heat, dt)
            metrics["winding_temp"] = self.hot_temp + noise(0, 0.3)
            metrics["speed"] = 1490 - 25 * load - 40 * wear + noise(0, 1.0)
        else:
            self.hot_temp = self._lag(self.hot_temp, self.ambient_c + 45 + 25 * load + 35 * heat, dt)
            metrics["discharge_temp"] = self.hot_temp + noise(0, 0.3)
            metrics["discharge_pressure"] = 6.5 + 1.5 * load + noise(0, 0.03)
        return metrics

    def alarm(self, metrics: dict[str, float]) -> tuple[str, str] | None:
        """The equipment's own protection relay: (fault code, message) when it trips."""
        if metrics["bearing_temp"] > 95.0:
            return "OHE", f"bearing temperature protection tripped at {metrics['bearing_temp']:.1f} C"
        return None
