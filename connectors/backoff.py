"""Capped exponential backoff with jitter, shared by every connector's reconnect loop.

>>> backoff = Backoff(0.5, 4.0, jitter=0.0)
>>> [backoff.next_delay() for _ in range(5)]
[0.5, 1.0, 2.0, 4.0, 4.0]
>>> backoff.reset(); backoff.next_delay()
0.5
"""

from __future__ import annotations

import random


class Backoff:
    def __init__(self, minimum_s: float, maximum_s: float, jitter: float = 0.5) -> None:
        self.minimum_s = minimum_s
        self.maximum_s = maximum_s
        # Delays are drawn from [delay x (1 - jitter), delay] so a fleet of
        # gateways does not reconnect to a restarted server in lockstep.
        self.jitter = jitter
        self._delay = minimum_s

    def next_delay(self) -> float:
        delay = self._delay * random.uniform(1.0 - self.jitter, 1.0)
        self._delay = min(self._delay * 2, self.maximum_s)
        return delay

    def reset(self) -> None:
        self._delay = self.minimum_s
