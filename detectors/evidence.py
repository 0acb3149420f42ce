"""The last readings of one device, kept for the anomaly that may need them as evidence.

Every monitored device holds a window of its recent readings all the time, and anomalies are
rare, so the window is stored compactly: times and values in typed arrays (16 bytes per
reading) and the metric as a small index, instead of a deque of reading objects (~300 bytes
each). Readings are rebuilt only when an anomaly asks for them. Only good readings enter the
window, so the quality is not stored.

>>> window = EvidenceWindow(per_metric=2)
>>> for t in range(3):
...     window.append(Reading("pump-1", "flow", 80.0 + t, float(t)))
...     window.append(Reading("pump-1", "pressure", 4.0, float(t)))
>>> [(r.metric, r.value, r.timestamp) for r in window.readings("pump-1")]
[('flow', 81.0, 1.0), ('pressure', 4.0, 1.0), ('flow', 82.0, 2.0), ('pressure', 4.0, 2.0)]
"""

from __future__ import annotations

from array import array

from gateway.core import Reading


class EvidenceWindow:
    __slots__ = ("per_metric", "metrics", "_index", "_which", "_times", "_values", "_next")

    def __init__(self, per_metric: int) -> None:
        self.per_metric = per_metric
        self.metrics: list[tuple[str, str]] = []  # (metric, source), by index
        self._index: dict[tuple[str, str], int] = {}
        self._which = array("H")
        self._times = array("d")
        self._values = array("d")
        self._next = 0  # where the next reading goes once the ring is full

    @property
    def capacity(self) -> int:
        return self.per_metric * max(1, len(self.metrics))

    def append(self, reading: Reading) -> None:
        key = (reading.metric, reading.source)
        which = self._index.get(key)
        if which is None:
            which = self._index[key] = len(self.metrics)
            self.metrics.append(key)
            self._unroll()  # a new metric widens the window: keep the order, grow from the end
        if self._next == 0 and len(self._times) < self.capacity:
            self._which.append(which)
            self._times.append(reading.timestamp)
            self._values.append(reading.value)
            if len(self._times) == self.capacity:
                # Full: copies of the exact size, without the room appending kept for growth.
                columns = (self._which, self._times, self._values)
                self._which, self._times, self._values = (array(column.typecode, column) for column in columns)
            return
        self._which[self._next] = which
        self._times[self._next] = reading.timestamp
        self._values[self._next] = reading.value
        self._next = (self._next + 1) % len(self._times)

    def _unroll(self) -> None:
        if self._next:
            for column in (self._which, self._times, self._values):
                column[:] = column[self._next:] + column[:self._next]
            self._next = 0

    def readings(self, device_id: str) -> list[Reading]:
        """The window's readings, oldest first."""
        order = list(range(self._next, len(self._times))) + list(range(self._next))
        return [Reading(device_id, self.metrics[self._which[i]][0], self._values[i], self._times[i],
                        source=self.metrics[self._which[i]][1]) for i in order]
