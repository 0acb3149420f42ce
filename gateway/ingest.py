"""The ingest guard: readings no sink or detector should ever see are rejected, counted, per device.

Every connector's readings pass here before the pipeline fans them out, so one
rule covers MQTT, Sparkplug, Modbus and OPC UA alike:

- a timestamp beyond ``max_future_skew_s`` ahead of the gateway's clock, or
  before ``oldest_timestamp``, is a device clock or payload error (a reading
  from the year 2100 would pin "latest" for good, ``1e300`` breaks rollups);
- a device may introduce at most ``max_metrics_per_device`` metric names; the
  readings of further new names are dropped (each name costs memory in the
  store, the detectors and the API).

>>> guard = IngestGuard(IngestConfig(max_metrics_per_device=2))
>>> from gateway.core import Reading
>>> batch = [Reading("p", "a", 1.0, 1e9), Reading("p", "b", 1.0, 1e9), Reading("p", "c", 1.0, 1e9),
...          Reading("p", "a", 1.0, 1e300)]
>>> [r.metric for r in guard.admit(batch, now=1e9)]
['a', 'b']
>>> dict(guard.rejected)
{'too_many_metrics': 1, 'timestamp_in_future': 1}
"""

from __future__ import annotations

import time
from collections import Counter
from datetime import datetime, timezone
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from gateway.core import Reading

TIMESTAMP_IN_FUTURE = "timestamp_in_future"
TIMESTAMP_TOO_OLD = "timestamp_too_old"
TOO_MANY_METRICS = "too_many_metrics"

# A device's rejections stay a /health problem this long after the last one.
RECENT_S = 600.0


class IngestConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_future_skew_s: float = Field(
        300.0, gt=0, le=366 * 86400,
        description="readings stamped further ahead of the gateway's clock are rejected (device clock error)")
    oldest_timestamp: datetime = Field(
        datetime(2000, 1, 1, tzinfo=timezone.utc),
        description="readings stamped before this are rejected (an unset device clock sends 1970)")
    max_metrics_per_device: int = Field(
        1000, ge=1, le=1_000_000, description="metric names one device may introduce; further new names are dropped")


class IngestGuard:
    def __init__(self, config: IngestConfig) -> None:
        self.config = config
        oldest = config.oldest_timestamp
        self.floor = (oldest if oldest.tzinfo else oldest.replace(tzinfo=timezone.utc)).timestamp()
        self.rejected: Counter[str] = Counter()
        self._metrics: dict[str, set[str]] = {}
        # (device, reason) -> [count, last seen (epoch s), an example]
        self._by_device: dict[tuple[str, str], list[Any]] = {}

    def admit(self, readings: list[Reading], now: float | None = None) -> list[Reading]:
        """The readings that may go on; the others are counted by reason and device."""
        now = time.time() if now is None else now
        ceiling = now + self.config.max_future_skew_s
        floor = self.floor
        cap = self.config.max_metrics_per_device
        known = self._metrics
        kept: list[Reading] = []
        for reading in readings:
            timestamp = reading.timestamp
            if not floor <= timestamp <= ceiling:  # NaN fails both comparisons
                reason = TIMESTAMP_TOO_OLD if timestamp < floor else TIMESTAMP_IN_FUTURE
                self._reject(reading, reason, now, f"timestamp {timestamp!r}")
                continue
            names = known.get(reading.device_id)
            if names is None:
                names = known[reading.device_id] = set()
            if reading.metric not in names:
                if len(names) >= cap:
                    self._reject(reading, TOO_MANY_METRICS, now, f"metric {reading.metric[:80]!r}")
                    continue
                names.add(reading.metric)
            kept.append(reading)
        return kept

    def _reject(self, reading: Reading, reason: str, now: float, example: str) -> None:
        self.rejected[reason] += 1
        entry = self._by_device.get((reading.device_id, reason))
        if entry is None:
            entry = self._by_device[(reading.device_id, reason)] = [0, now, example]
        entry[0] += 1
        entry[1] = now
        entry[2] = example

    def diagnostics(self) -> dict[str, Any]:
        devices: dict[str, dict[str, Any]] = {}
        for (device, reason), (count, last_at, example) in sorted(self._by_device.items()):
            devices.setdefault(device, {})[reason] = {"count": count, "last_at": last_at, "example": example}
        return {
            "max_future_skew_s": self.config.max_future_skew_s,
            "oldest_timestamp": self.floor,
            "max_metrics_per_device": self.config.max_metrics_per_device,
            "rejected": dict(self.rejected),
            "rejected_by_device": devices,
        }

    def problems(self, now: float) -> list[str]:
        return [
            f"device {device}: {count} readings rejected ({reason.replace('_', ' ')}, last: {example})"
            for (device, reason), (count, last_at, example) in sorted(self._by_device.items())
            if now - last_at <= RECENT_S
        ]
