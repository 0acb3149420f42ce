"""Sign-in attempts per client address: a sliding window, so guessing passwords from one address
is slow even across many user names (the per-user lockout covers one name from many addresses).

>>> limiter = AttemptLimiter(attempts=2, window_s=60)
>>> [limiter.allow("10.0.0.7", now=t) for t in (0, 1, 2)], limiter.allow("10.0.0.8", now=2)
([True, True, False], True)
>>> limiter.retry_after("10.0.0.7", now=2), limiter.allow("10.0.0.7", now=61)
(58, True)
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict, deque


class AttemptLimiter:
    def __init__(self, attempts: int, window_s: float, max_addresses: int = 10_000) -> None:
        self.attempts = attempts
        self.window_s = window_s
        self.max_addresses = max_addresses
        self.refused = 0
        self._seen: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def allow(self, address: str, now: float) -> bool:
        """Count an attempt from ``address``; False when it is over the limit (the attempt is refused)."""
        with self._lock:
            times = self._seen.pop(address, None) or deque()
            while times and times[0] <= now - self.window_s:
                times.popleft()
            allowed = len(times) < self.attempts
            if allowed:
                times.append(now)
            else:
                self.refused += 1
            self._seen[address] = times  # most recent last
            while len(self._seen) > self.max_addresses:  # bounded memory under a spray of addresses
                self._seen.popitem(last=False)
            return allowed

    def retry_after(self, address: str, now: float) -> int:
        with self._lock:
            times = self._seen.get(address)
            if not times:
                return 0
            return max(1, math.ceil(times[0] + self.window_s - now))
