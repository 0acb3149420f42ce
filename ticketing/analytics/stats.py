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


def rate_ratios(failures: np.ndarray, exposure: np.ndarray, rest_failures: np.ndarray, rest_exposure: np.ndarray,
                confidence: float = 0.95) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(ratio, low, high, one-sided p) for many groups at once: the exact (Clopper-Pearson) interval
    from beta quantiles, the p-value from the binomial tail, as scipy's binomtest computes them."""
    a = np.asarray(failures, dtype=float)
    ta, b, tb = (np.asarray(x, dtype=float) for x in (exposure, rest_failures, rest_exposure))
    n = a + b
    null = ta / (ta + tb)
    alpha = 1 - confidence
    with np.errstate(divide="ignore", invalid="ignore"):
        low_p = np.where(a > 0, stats.beta.ppf(alpha / 2, a, n - a + 1), 0.0)
        high_p = np.where(a < n, stats.beta.ppf(1 - alpha / 2, a + 1, n - a), 1.0)
        odds = tb / ta
        low = low_p / (1 - low_p) * odds
        high = np.where(high_p < 1, high_p / (1 - high_p) * odds, np.inf)
        ratio = np.where(b > 0, (a / ta) / np.where(b > 0, b / tb, 1), np.inf)
        p_value = np.where(n > 0, stats.binom.sf(a - 1, n, null), 1.0)
    return ratio, low, high, p_value


def rate_ratio(failures: int, exposure: float, rest_failures: int, rest_exposure: float,
               confidence: float = 0.95) -> RateRatio:
    """The group's failure rate over the rest's, with an exact interval and the one-sided p-value
    that the group fails more often."""
    if exposure <= 0 or rest_exposure <= 0:
        raise ValueError("both exposures must be positive")
    if failures + rest_failures == 0:
        return RateRatio(math.nan, 0.0, math.inf, 1.0)
    ratio, low, high, p_value = rate_ratios(np.array([failures]), np.array([exposure]), np.array([rest_failures]),
                                            np.array([rest_exposure]), confidence)
    return RateRatio(float(ratio[0]), float(low[0]), float(high[0]), float(p_value[0]))


def benjamini_hochberg(p_values: list[float], hypotheses: int | None = None) -> list[float]:
    """Adjusted p-values (q-values): rejecting those ≤ α keeps the false-discovery rate at α.

    ``hypotheses``: how many were looked at, when only some were worth computing (the others count
    with p = 1): leaving them out would let a search over many small groups pass off its luck.

    >>> [round(q, 3) for q in benjamini_hochberg([0.01, 0.04], hypotheses=4)]
    [0.04, 0.08]
    """
    if not p_values:
        return []
    padded = np.ones(max(len(p_values), hypotheses or 0))
    padded[:len(p_values)] = p_values
    return [float(q) for q in stats.false_discovery_control(padded, method="bh")[:len(p_values)]]
