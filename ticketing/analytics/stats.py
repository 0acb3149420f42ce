"""The statistics behind a fault cluster: a failure-rate ratio with an exact interval and p-value,
and the Benjamini–Hochberg adjustment across every group tested (scipy.stats, nothing hand-rolled).

A group's failures ``a`` over exposure ``t_a`` (device-days) against the rest's ``b`` over ``t_b``:
conditional on ``a + b``, ``a`` is binomial with ``p = t_a·RR / (t_a·RR + t_b)``, so the exact
(Clopper–Pearson) interval for ``p`` maps to one for the rate ratio RR, and the one-sided binomial
test of ``p = t_a / (t_a + t_b)`` is the exact test of RR = 1 against RR > 1.

>>> result = rate_ratio(30, 100.0, 20, 200.0)
>>> round(result.ratio, 2), round(result.low, 2), round(result.high, 2), round(result.p_value, 5)
(3.0, 1.65, 5.57, 0.0001)
>>> [round(q, 3) for q in benjamini_hochberg([0.01, 0.04, 0.03, 0.5])]
[0.04, 0.053, 0.053, 0.5]
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class RateRatio:
    ratio: float
    low: float
    high: float
    p_value: float


def _to_ratio(p: float, exposure: float, rest_exposure: float) -> float:
    if p >= 1.0:
        return math.inf
    return p / (1.0 - p) * rest_exposure / exposure


def rate_ratio(failures: int, exposure: float, rest_failures: int, rest_exposure: float,
               confidence: float = 0.95) -> RateRatio:
    """The group's failure rate over the rest's, with an exact interval and the one-sided p-value
    that the group fails more often."""
    if exposure <= 0 or rest_exposure <= 0:
        raise ValueError("both exposures must be positive")
    total = failures + rest_failures
    if total == 0:
        return RateRatio(math.nan, 0.0, math.inf, 1.0)
    null = exposure / (exposure + rest_exposure)
    test = stats.binomtest(failures, total, null, alternative="greater")
    interval = stats.binomtest(failures, total, null).proportion_ci(confidence_level=confidence, method="exact")
    ratio = (failures / exposure) / (rest_failures / rest_exposure) if rest_failures else math.inf
    return RateRatio(ratio, _to_ratio(interval.low, exposure, rest_exposure),
                     _to_ratio(interval.high, exposure, rest_exposure), float(test.pvalue))


def benjamini_hochberg(p_values: list[float]) -> list[float]:
    """Adjusted p-values (q-values): rejecting those ≤ α keeps the false-discovery rate at α."""
    if not p_values:
        return []
    return [float(q) for q in stats.false_discovery_control(np.asarray(p_values, dtype=float), method="bh")]
