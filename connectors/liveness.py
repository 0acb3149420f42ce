"""'Device offline' events: a device silent for too long raises an alarm, and clears it when back.

>>> tracker = OfflineTracker(after_s=3.0, source="plc")
>>> tracker.expect("pump-1", now=0.0)
>>> tracker.overdue(now=2.0)
[]
>>> [(a.device_id, a.code, a.active) for a in tracker.overdue(now=3.5)]
[('pump-1', 'OFFLINE', True)]
>>> tracker.overdue(now=9.0)  # raised once per episode
[]
>>> [(a.code, a.active) for a in [tracker.seen("pump-1", now=10.0)] if a]
[('OFFLINE', False)]
"""

from __future__ import annotations

from gateway.core import DEVICE_OFFLINE_CODE, Alarm, Severity


class OfflineTracker:
    def __init__(self, after_s: float, source: str) -> None:
        self.after_s = after_s
        self.source = source
        self.last_seen: dict[str, float] = {}
        self.offline: set[str] = set()

    def expect(self, device_id: str, now: float) -> None:
        """Watch a device that has not reported yet: it must within ``after_s`` from ``now``."""
        self.last_seen.setdefault(device_id, now)

    def seen(self, device_id: str, now: float) -> Alarm | None:
        """Record a sign of life; the clearing alarm if the device was offline."""
        self.last_seen[device_id] = now
        if device_id not in self.offline:
            return None
        self.offline.discard(device_id)
        return Alarm(device_id, now, DEVICE_OFFLINE_CODE, Severity.MEDIUM,
                     f"device back online (source {self.source})", active=False, source=self.source)

    def overdue(self, now: float) -> list[Alarm]:
        """Alarms for devices that just went silent for longer than ``after_s``."""
        alarms = []
        for device_id, last in self.last_seen.items():
            if device_id in self.offline or now - last <= self.after_s:
                continue
            self.offline.add(device_id)
            alarms.append(Alarm(
                device_id, now, DEVICE_OFFLINE_CODE, Severity.MEDIUM,
                f"no data for {now - last:.0f} s from source {self.source}", active=True, source=self.source,
            ))
        return alarms
