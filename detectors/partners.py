"""Partners: metrics of one device that move together for good (a pump's flow with its motor current).

Pairwise correlations are gathered in the warm-up; each metric's partner is the one it correlated
with most, if at least a minimum. The models score a metric net of what its partner explains.

>>> correlations = {}
>>> for t in range(50):
...     correlate(correlations, {"flow": t, "current": 2 * t + 1, "noise": (t * 7) % 5})
>>> {name: (partner, round(c, 6)) for name, (partner, c) in strongest(correlations, ["flow", "current", "noise"], 0.9).items()}
{'flow': ('current', 1.0), 'current': ('flow', 1.0)}
"""

from __future__ import annotations

from itertools import combinations

from river import stats

Correlations = dict[tuple[str, str], stats.PearsonCorr]


def correlate(correlations: Correlations, x: dict[str, float]) -> None:
    """One more sample of every pair of the metrics in ``x``."""
    for a, b in combinations(sorted(x), 2):
        pair = correlations.get((a, b))
        if pair is None:
            pair = correlations[(a, b)] = stats.PearsonCorr()
        pair.update(x[a], x[b])


def strongest(correlations: Correlations, names: list[str], minimum: float) -> dict[str, tuple[str, float]]:
    """Each metric's partner and their correlation, for the metrics correlated at least ``minimum`` with one."""
    chosen = {}
    for name in names:
        best, coupling = None, 0.0
        for (a, b), correlation in correlations.items():
            if name in (a, b) and abs(correlation.get()) > abs(coupling):
                best, coupling = (b if name == a else a), correlation.get()
        if best is not None and abs(coupling) >= minimum:
            chosen[name] = (best, coupling)
    return chosen
