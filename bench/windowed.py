"""A windowed score in the style of the streaming anomaly benchmarks (NAB's standard profile).

Each labelled anomaly window rewards its earliest detection, the more the earlier (a scaled
sigmoid of the position in the window: about 1 at its start, 0 at its end); a window never
detected costs ``A_FN``; a detection outside every window costs ``A_FP``, less just after a
window (a late detection of it) than far from any. The first ``PROBATION`` share of each
stream is not scored (a detector learning the stream cannot be judged there). The result is
normalised: 0 is a detector that never alerts, 100 the perfect one.

Unlike NAB, the windows are the labelled anomaly segments themselves (SKAB and the zoo label
segments, not points).

>>> score([(300, 320)], [305], length=1000)  # found early in its window: near perfect
97.1
>>> score([(300, 320)], [], length=1000)
0.0
>>> score([(300, 320)], [305, 600], length=1000) < 97.1  # a false alert costs
True
"""

from __future__ import annotations

import bisect
import math

A_TP = 1.0
A_FP = -0.11
A_FN = -1.0
PROBATION = 0.15


def scaled_sigmoid(position: float) -> float:
    """NAB's weighting: 1 before a window's start (-1), 0 at its end (0), towards -1 after it."""
    if position > 3.0:
        return -1.0
    return 2.0 / (1.0 + math.exp(5.0 * position)) - 1.0


def raw(windows: list[tuple[int, int]], detections: list[int], length: int) -> tuple[float, int]:
    """The unnormalised score of one stream and the number of windows scored."""
    probation = int(PROBATION * length)
    scored = [(start, end) for start, end in sorted(windows) if start >= probation]
    total, found = 0.0, set()
    starts = [start for start, _ in scored]
    for detection in sorted(d for d in detections if d >= probation):
        k = bisect.bisect_right(starts, detection) - 1
        if k >= 0 and detection < scored[k][1]:
            if k not in found:
                found.add(k)
                start, end = scored[k]
                total += A_TP * scaled_sigmoid((detection - (end - 1)) / max(end - start, 1))
            continue
        if k >= 0:
            start, end = scored[k]
            total += A_FP * -scaled_sigmoid((detection - (end - 1)) / max(end - start, 1))
        else:
            total += A_FP
    total += A_FN * (len(scored) - len(found))
    return total, len(scored)


def score(windows: list[tuple[int, int]], detections: list[int], length: int) -> float:
    """One stream's normalised score."""
    return normalised([raw(windows, detections, length)])


def normalised(parts: list[tuple[float, int]]) -> float:
    """Pooled over streams: 100 x (raw - never alerting) / (perfect - never alerting)."""
    total = sum(part for part, _ in parts)
    windows = sum(count for _, count in parts)
    if windows == 0:
        return 0.0
    null, perfect = A_FN * windows, A_TP * windows
    return round(100 * (total - null) / (perfect - null), 1)
