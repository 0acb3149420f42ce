"""The one interface every anomaly model implements, in river's style.

A model scores a feature dict (metric name -> value) and learns from it.
Thresholding, warm-up and persistence are not the model's business: they live
in :mod:`detectors.alerting`, so every model gets them the same way.
"""

from __future__ import annotations

from typing import Protocol


class Detector(Protocol):
    def learn_one(self, x: dict[str, float], at: float = 0.0) -> None:
        """Update the model with one normal sample, taken at ``at`` (epoch seconds)."""

    def score_one(self, x: dict[str, float], at: float = 0.0) -> float:
        """Anomaly score of one sample taken at ``at``: higher is more anomalous."""

    def contributions(self) -> dict[str, float]:
        """Signed share of each metric in the last score (+: higher than normal); explains an alert."""
