"""Findings before telemetry: while a finding is being ticketed, bulk work gives way.

An alarm's way to a dispatched work order has a latency target; telemetry has a throughput one, with
queues (and the broker's session) to absorb a pause. In one interpreter the two share the GIL, and on a
small edge box the cores too: measured with 10k readings/s in the background (``bench.latency``), an
alarm's ticketing took four times as long as on an idle gateway. So the pipeline's bulk stages (storing,
scoring) wait at their next batch boundary while a finding is in ticketing, for a bounded time: telemetry
is delayed by at most ``max_wait_s`` a batch, never dropped, and the batches merged meanwhile are written
in one go.

>>> precedence = Precedence(max_wait_s=0.05)
>>> precedence.give_way()  # nothing urgent: no wait
False
>>> with precedence.urgent():
...     precedence.give_way()  # the bound, were the urgent work to take longer
True
>>> precedence.gave_way
1
"""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from typing import Iterator

MAX_WAIT_S = 0.1


class Precedence:
    def __init__(self, max_wait_s: float = MAX_WAIT_S) -> None:
        self.max_wait_s = max_wait_s
        self._lock = threading.Lock()
        self._urgent = 0
        self._clear = threading.Event()
        self._clear.set()
        self.gave_way = 0  # bulk batches that waited
        self.waited_s = 0.0

    @contextmanager
    def urgent(self) -> Iterator[None]:
        """Urgent work runs inside this: bulk work arriving at a batch boundary meanwhile waits."""
        with self._lock:
            self._urgent += 1
            self._clear.clear()
        try:
            yield
        finally:
            with self._lock:
                self._urgent -= 1
                if not self._urgent:
                    self._clear.set()

    def give_way(self) -> bool:
        """Called by bulk work before a batch: wait while urgent work runs, at most ``max_wait_s``. Whether
        it waited."""
        if self._clear.is_set():
            return False
        began = time.monotonic()
        self._clear.wait(self.max_wait_s)
        with self._lock:  # the store's and the detectors' threads both count here
            self.gave_way += 1
            self.waited_s += time.monotonic() - began
        return True

    def diagnostics(self) -> dict[str, float]:
        return {"gave_way": self.gave_way, "waited_s": round(self.waited_s, 3)}
