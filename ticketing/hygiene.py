"""Alarm hygiene helpers that need no database: chattering detection and shelving.

A signal that goes on and off ``cycles`` times within ``window_s`` is chattering: it is
shelved for ``shelve_s`` (restarts come back unshelved) and becomes one instrument ticket.

>>> chatter = ChatterTracker(cycles=3, window_s=60, shelve_s=600)
>>> [chatter.edge(("pump-1", "OHE"), active, t) for t, active in enumerate([True, False, True, False, True])]
[False, False, False, False, False]
>>> chatter.edge(("pump-1", "OHE"), False, 5.0)  # third off: three cycles in a minute
True
>>> chatter.shelved(("pump-1", "OHE"), 100.0), chatter.shelved(("pump-1", "OHE"), 700.0)
(True, False)
"""

from __future__ import annotations

from collections import deque

SignalKey = tuple[str, str]  # (device, alarm code)


class ChatterTracker:
    def __init__(self, cycles: int, window_s: float, shelve_s: float) -> None:
        self.cycles = cycles
        self.window_s = window_s
        self.shelve_s = shelve_s
        self._state: dict[SignalKey, bool] = {}
        self._edges: dict[SignalKey, deque[float]] = {}
        self._shelved_until: dict[SignalKey, float] = {}

    def shelved(self, key: SignalKey, at: float) -> bool:
        return self._shelved_until.get(key, float("-inf")) > at

    def edge(self, key: SignalKey, active: bool, at: float) -> bool:
        """Record the signal's state at ``at``; True when it just became chattering (and is now shelved)."""
        if self._state.get(key) == active:
            return False
        self._state[key] = active
        edges = self._edges.setdefault(key, deque())
        edges.append(at)
        while edges and edges[0] < at - self.window_s:
            edges.popleft()
        # A cycle is on then off: 2 x cycles edges, the first being the rise.
        if len(edges) < 2 * self.cycles:
            return False
        edges.clear()
        self._shelved_until[key] = at + self.shelve_s
        return True
