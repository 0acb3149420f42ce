"""Each metric against its own slowly tracking baseline, in units of its normal variation.

A machine's temperatures creep with the ambient and the load for hours; a
fixed mean would call that an anomaly, a mean that followed every sample
would follow a fault too. The baseline here moves towards each sample by at
most ``clip`` spreads x ``alpha`` per sample (a Huber step): a slow creep is
followed, a step change of many spreads is not (at ``alpha`` 0.003 and
``clip`` 1, a 6-spread step takes ~1700 samples to be absorbed). Each metric
keeps tracking on its own, also while another metric is in alarm, so the
metrics that did not fail carry no stale baseline past the end of an
episode.

The spread of each metric is learned from its first ``scale_samples`` normal
samples and then fixed (a spread that kept adapting would widen to swallow a
fault). The score is the largest smoothed |deviation| of any metric, in one of
two units:

* spreads (``calibration_samples=0``, the default): one threshold for all
  metrics, set by the ones that wander most. Right for machines whose metrics
  follow a varying load: a set-point change moves them all, and a threshold
  that a temperature's wandering sets keeps the quiet metrics from alerting on it.
* each metric's own normal variation (``calibration_samples > 0``): after its
  spread is fixed, a metric's smoothed deviation is watched for that many
  samples, and its RMS (at least ``MIN_NOISE`` spreads) becomes the metric's
  unit. Right for steady processes: a flow that never moves alerts on a small
  step, a temperature that drifts all day needs a large one. On SKAB's
  water-pump testbed, ``examples/steady-process.yaml`` scores F1 0.78 where
  the default scores 0.70.

Metrics that move together for good (a pump's pressure and its flow follow the load through the
pump curve; correlation at least ``MIN_COUPLING`` while the spreads are learned) are partners: a
metric's deviation then counts only as far as its partner does not explain it (the smaller of its
own deviation and its deviation net of the partner's). A set-point change beyond anything seen in
the warm-up moves both and alerts neither; a pressure that drops while the flow holds still does.
Without this, load changes were most of the false work orders on the simulated fleet.

``score_one`` advances the baselines and the smoothing, so call it once per sample, then
``learn_one`` for samples deemed normal (that only fills the spreads and the correlations the
partners are chosen from, in the warm-up).

>>> model = RobustBaseline()
>>> for t in range(600):
...     noise = ((t * 7) % 5 - 2) / 2
...     x = {"flow": 32.0 + 0.1 * noise, "temperature": 60.0 + t / 2000 + 0.3 * noise}
...     _ = model.score_one(x)
...     model.learn_one(x)
>>> model.score_one({"flow": 32.0, "temperature": 60.3}) < 3
True
>>> for _ in range(60):
...     score = model.score_one({"flow": 31.0, "temperature": 60.3})
>>> score > 6, max(model.contributions().items(), key=lambda kv: abs(kv[1]))[0]
(True, 'flow')
"""

from __future__ import annotations

import math

from detectors import partners
from detectors.hst import RunningStats

MIN_SPREAD = 1e-6
# A metric's own unit is never under this many spreads: smoothing shrinks white noise to ~0.16
# spreads, and a unit that small would alert on any settling of a quiet signal.
MIN_NOISE = 0.5
# Metrics correlated at least this much while the spreads are learned move together for good
# (a pump's pressure with its flow): a metric is then also scored net of its partner.
MIN_COUPLING = 0.9


class MetricTrack(RunningStats):
    """One metric's spread (Welford over its first normal samples), baseline and smoothed deviation."""

    __slots__ = ("baseline", "smoothed", "net", "partner", "coupling", "calibrated", "unit", "_noise_sq")

    def __init__(self) -> None:
        super().__init__()
        self.baseline = 0.0
        self.smoothed = 0.0
        self.net = 0.0  # the smoothed deviation, or what its partner does not explain of it if that is less
        self.partner: MetricTrack | None = None
        self.coupling = 0.0  # correlation with the partner: its expected deviation per partner spread
        self.calibrated = 0  # samples of the net deviation its unit was measured over
        self.unit = 1.0  # what its score is measured in: spreads, or its own normal variation once calibrated
        self._noise_sq = 0.0

    def settle(self) -> None:
        """The net deviation: a move the partner explains (the same load change) does not count."""
        self.net = self.smoothed
        if self.partner is not None:
            unexplained = self.smoothed - self.coupling * self.partner.smoothed
            if abs(unexplained) < abs(self.smoothed):
                self.net = unexplained

    def calibrate(self) -> None:
        """One more sample of the metric's normal variation (the RMS of its net deviation), in spreads."""
        self.calibrated += 1
        self._noise_sq += self.net * self.net
        self.unit = max(math.sqrt(self._noise_sq / self.calibrated), MIN_NOISE)


class RobustBaseline:
    # One track per metric in one dict: a monitored stream costs one entry, not three.
    __slots__ = ("alpha", "clip", "smoothing", "scale_samples", "calibration_samples", "tracks", "_correlations")

    def __init__(self, alpha: float = 0.003, clip: float = 1.0, smoothing: float = 0.05,
                 scale_samples: int = 300, calibration_samples: int = 0) -> None:
        self.alpha = alpha
        self.clip = clip
        self.smoothing = smoothing
        self.scale_samples = scale_samples
        self.calibration_samples = calibration_samples
        self.tracks: dict[str, MetricTrack] = {}
        # Pairwise correlations while the spreads are learned; let go once the partners are chosen.
        self._correlations: partners.Correlations | None = {}

    def score_one(self, x: dict[str, float], at: float = 0.0) -> float:
        scored = []
        for name, value in x.items():
            track = self.tracks.get(name)
            if track is None or track.count < 2:
                continue
            spread = max(track.std, MIN_SPREAD)
            deviation = (value - track.baseline) / spread
            track.smoothed += self.smoothing * (deviation - track.smoothed)
            if track.count >= self.scale_samples:
                # Tracking starts once the spread is fixed; until then the baseline is the running mean.
                step = max(-self.clip, min(self.clip, deviation)) * spread
                track.baseline += self.alpha * step
            scored.append(track)
        score = 0.0
        for track in scored:  # after every smoothing moved: a partner's deviation is of this sample
            track.settle()
            if track.count >= self.scale_samples and track.calibrated < self.calibration_samples:
                track.calibrate()
            score = max(score, abs(track.net) / track.unit)
        return score

    def contributions(self) -> dict[str, float]:
        """Net signed deviation of each metric from its baseline, in the unit it is scored in."""
        return {name: track.net / track.unit for name, track in self.tracks.items() if track.count >= 2}

    def learn_one(self, x: dict[str, float], at: float = 0.0) -> None:
        for name, value in x.items():
            track = self.tracks.get(name)
            if track is None:
                track = self.tracks[name] = MetricTrack()
            if track.count < self.scale_samples:
                track.update(value)
                track.baseline = track.mean
        if self._correlations is not None:
            self._correlate(x)

    def _correlate(self, x: dict[str, float]) -> None:
        partners.correlate(self._correlations, x)
        if all(track.count >= self.scale_samples for track in self.tracks.values()):
            self._choose_partners()

    def _choose_partners(self) -> None:
        """Each metric's partner: the one it correlated with most, if at least ``MIN_COUPLING``."""
        for name, (best, coupling) in partners.strongest(self._correlations, list(self.tracks), MIN_COUPLING).items():
            self.tracks[name].partner, self.tracks[name].coupling = self.tracks[best], coupling
        self._correlations = None
