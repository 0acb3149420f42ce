"""Device physics and fault models shared by every simulator.

Each device follows a load cycle (a slow sine plus random set-point changes);
its metrics are correlated through the load and through slow thermal lags, with
Gaussian measurement noise. Faults grow a severity from 0 at onset to 1 at the
failure point and bend the physics the way the real failure would.

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
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

DEVICE_TYPES = ("pump", "motor", "compressor")
FAULT_KINDS = ("bearing_wear", "overheating", "cavitation")
AMBIENT_C = 25.0
LOAD_PERIOD_S = 1200.0
# Thermal time constant of a bearing housing, in simulated seconds.
THERMAL_TAU_S = 120.0
SETPOINT_CHANGE_PER_S = 1 / 900
SETPOINT_RAMP_S = 60.0


@dataclass(frozen=True, slots=True)
class DeviceSpec:
    id: str
    type: str
    site: str


@dataclass(slots=True)
class Fault:
    device_id: str
    kind: str
    onset: float
    duration: float

    @property
    def failure_at(self) -> float:
        return self.onset + self.duration

    def severity(self, t: float) -> float:
        if t <= self.onset:
            return 0.0
        # Wear accelerates: slow at first, fast near the failure point.
        return min(1.0, ((t - self.onset) / self.duration) ** 1.5)


class DeviceModel:
    def __init__(self, spec: DeviceSpec, seed: int) -> None:
        if spec.type not in DEVICE_TYPES:
            raise ValueError(f"device {spec.id!r}: unknown type {spec.type!r}; known: {', '.join(DEVICE_TYPES)}")
        self.spec = spec
        self.rng = random.Random(seed)
        self.phase = self.rng.uniform(0, 2 * math.pi)
        self.setpoint = self.rng.uniform(0.55, 0.75)
        self.target_setpoint = self.setpoint
        self.faults: list[Fault] = []
        self.bearing_temp = AMBIENT_C + 30 * self.setpoint
        self.hot_temp = AMBIENT_C + 60 * self.setpoint
        self.last_t: float | None = None

    def inject(self, fault: Fault) -> None:
        if fault.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault {fault.kind!r}; known: {', '.join(FAULT_KINDS)}")
        self.faults.append(fault)

    def _severity(self, kind: str, t: float) -> float:
        return max((fault.severity(t) for fault in self.faults if fault.kind == kind), default=0.0)

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

        vibration = 1.6 + 0.9 * load + 6.5 * wear + 2.0 * cavitation + noise(0, 0.08 * (1 + 3 * cavitation))
        self.bearing_temp = self._lag(self.bearing_temp, AMBIENT_C + 30 * load + 45 * wear + 50 * heat, dt)
        current = 18 + 32 * load + 4 * wear + 5 * heat
        metrics = {
            "vibration": max(0.0, vibration),
            "bearing_temp": self.bearing_temp + noise(0, 0.15),
            "motor_current": current + noise(0, 0.3),
        }
        if self.spec.type == "pump":
            metrics["flow"] = 130 * load * (1 - 0.25 * cavitation) + noise(0, 1.2)
            metrics["pressure"] = 1.5 + 4.5 * load**2 - 1.6 * cavitation + noise(0, 0.04)
        elif self.spec.type == "motor":
            self.hot_temp = self._lag(self.hot_temp, AMBIENT_C + 60 * load + 70 * heat, dt)
            metrics["winding_temp"] = self.hot_temp + noise(0, 0.3)
            metrics["speed"] = 1490 - 25 * load - 40 * wear + noise(0, 1.0)
        else:
            self.hot_temp = self._lag(self.hot_temp, 70 + 25 * load + 35 * heat, dt)
            metrics["discharge_temp"] = self.hot_temp + noise(0, 0.3)
            metrics["discharge_pressure"] = 6.5 + 1.5 * load + noise(0, 0.03)
        return metrics

    def alarm(self, metrics: dict[str, float]) -> tuple[str, str] | None:
        """The equipment's own protection relay: (fault code, message) when it trips."""
        if metrics["bearing_temp"] > 95.0:
            return "OHE", f"bearing temperature protection tripped at {metrics['bearing_temp']:.1f} C"
        return None
