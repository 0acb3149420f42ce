"""Each metric against an expectation that keeps adapting: level, daily profile and spread.

The default model. It has to hold up on streams nobody tuned it for (a 1 Hz pump, a server
metric every 5 minutes, a temperature with a daily cycle), so nothing is fixed at the end of
the warm-up and nothing is tuned per stream:

* **Expectation**: a slowly tracking level (a Huber step towards each sample, so a creep is
  followed and a step is not) plus, when the metric has a cycle, a **seasonal profile** (one
  value per bin of the day, interpolated, learned online from normal samples). The profile is
  used once it has seen two periods and explains most of the metric's variance; a metric
  without a cycle keeps ``profile`` unused.
* **Spread**: a decaying RMS of the residual about the slow channel's local mean, trimmed at
  ``TRIM`` spreads and learned from normal samples only (neither a fault nor a slow drift widens
  it), floored at half the smallest step the signal takes (a quantised signal moving by one step
  is not an anomaly).
* **Three ways to be off**, each in its own self-calibrating unit, so the alert threshold is 1:

  - *spike*: this sample's residual, against a high quantile of normal residuals (heavy tails
    raise it) and never under ``SPIKE_Z`` spreads, so one bad sample alerts on itself;
  - *fast shift*: an EWMA of the residual (weight ``FAST``), in its own normal RMS: a step of
    a few spreads within a handful of samples;
  - *slow shift*: a slower EWMA (weight ``SLOW``, input clipped at ``SLOW_CLIP``), in its own
    normal RMS: small lasting shifts of autocorrelated signals (a valve partly closed).

  The channels' units forget by time (``unit_memory_s``: a fault developing over hours must
  not become their unit) and are learned anew when the seasonal profile takes over.

* **Degenerate starts**: a metric is scored only once it has moved ``MIN_MOVES`` times and
  has ``MIN_SAMPLES`` samples since it first moved; a constant or stuck start restarts its
  statistics, so it cannot leave a spread of zero behind.
* **Regime changes**: a deviation that lasts ``relearn_after_s`` (and ``MIN_RELEARN_SAMPLES``)
  is accepted as the new normal: the level jumps to it and the episode can clear, so the next
  fault on top of the new level is raised rather than hidden in an alert that never ends.

Metrics that move together for good (a pump's flow and its motor current; correlation at least
``MIN_COUPLING`` in the warm-up) are partners, as in :mod:`detectors.robust`: a metric counts
only as far as its partner, scaled by the regression slope between them, does not explain it.

On SKAB (1 Hz water pump, ``python -m bench.evaluate --skab ...``) this default scores F1 0.804
at FAR 12.0 %; on the zoo of synthetic streams (``python -m bench.zoo``) it finds every fault
with no false alert in 400,000 healthy samples.

``score_one`` advances the smoothing and the level, so call it once per sample with the
sample's time, then ``learn_one`` for samples deemed normal.

>>> import random
>>> rng = random.Random(1)
>>> model = AdaptiveBaseline()
>>> for t in range(600):
...     x = {"flow": 32.0 + rng.gauss(0, 0.1)}
...     _ = model.score_one(x, float(t))
...     model.learn_one(x, float(t))
>>> model.score_one({"flow": 32.0}, 600.0) < 1
True
>>> model.score_one({"flow": 32.8}, 601.0) > 1  # one sample 8 spreads out
True
>>> model.contributions()["flow"] > 5
True
"""

from __future__ import annotations

import math
from array import array

from detectors import partners

MIN_SPREAD = 1e-9
# Spikes: never under this many spreads, nor under SPIKE_MARGIN x the TAIL quantile of normal |z|.
SPIKE_Z = 5.5
SPIKE_MARGIN = 1.5
TAIL = 0.999
TAIL_START = 3.29  # the Gaussian's 0.999 quantile of |z|: where the tracker starts
TAIL_STEP = 0.05
TAIL_CALM = 0.8
# Shifts: EWMA weights of the residual, and the limit in their normal RMS.
FAST = 0.25
SLOW = 0.03
FAST_LIMIT = 5.0
SLOW_LIMIT = 6.0
FAST_CLIP = 20.0
SLOW_CLIP = 3.0
# The spread learns from residuals within TRIM spreads; a Gaussian's variance within them is
# TRIMMED_SHARE of the whole, which corrects the trimming.
TRIM = 3.0
TRIMMED_SHARE = 0.9733
# Residuals are winsorised at this many spreads before they update the spread.
WINSOR = 4.0
MIN_MOVES = 10
MIN_SAMPLES = 30
MIN_RELEARN_SAMPLES = 30
# Correlated at least this much in the warm-up: partners (see detectors.robust).
MIN_COUPLING = 0.9
# The profile is used when its residual's variance is under this share of the flat residual's.
SEASONAL_GAIN = 0.5
# The profile learns from at most this many samples per visit of a bin (a sample every 60 s: 48 bins a day).
PER_BIN_VISIT = 30


def white_rms(weight: float) -> float:
    """RMS of an EWMA (this weight) of unit white noise: the floor of a shift channel's unit."""
    return math.sqrt(weight / (2 - weight))


FAST_FLOOR = white_rms(FAST)
SLOW_FLOOR = white_rms(SLOW)


class Profile:
    """One metric's seasonal shape: the mean deviation from its level per bin of the period, learned online."""

    __slots__ = ("period", "values", "first_at", "learned_at", "interval", "learned", "flat_var", "season_var")

    def __init__(self, period_s: float, bins: int) -> None:
        self.period = period_s
        # Single precision: a profile is a shape learned to a small share of the spread, and a monitored
        # stream's memory counts (48 bins: 192 bytes, not 384).
        self.values = array("f", bytes(4 * bins))
        self.first_at = math.nan
        self.learned_at = math.nan
        self.interval = 0.0  # typical time between the samples learned (EWMA), for the learning rate
        self.learned = 0
        self.flat_var = 0.0  # residual variance without the profile...
        self.season_var = 0.0  # ...and with it

    def _position(self, at: float) -> tuple[int, int, float]:
        bins = len(self.values)
        phase = (at % self.period) / self.period * bins - 0.5  # bin centres
        low = math.floor(phase)
        return low % bins, (low + 1) % bins, phase - low

    def at(self, at: float) -> float:
        low, high, frac = self._position(at)
        return self.values[low] * (1 - frac) + self.values[high] * frac

    def periods_seen(self, at: float) -> float:
        return 0.0 if math.isnan(self.first_at) else (at - self.first_at) / self.period

    def active(self, at: float) -> bool:
        return self.periods_seen(at) >= 2 and self.season_var < SEASONAL_GAIN * self.flat_var

    def learn(self, at: float, deviation: float, decay: float) -> None:
        """One normal sample's deviation from the level: learned when PER_BIN_VISIT have not come yet in this
        bin's share of the period (a 1 Hz stream gives 1,800 samples a bin visit; a few dozen shape it as
        well, at a sixtieth of the cost)."""
        step = at - self.learned_at
        if step < self.period / len(self.values) / PER_BIN_VISIT:
            return
        if math.isnan(self.first_at):
            self.first_at = at
        self.learned_at = at
        self.learned += 1
        rate = 1 / self.learned
        if rate < decay:
            rate = decay
        interval = self.interval
        if 0 < step and (interval == 0 or step < 10 * interval):
            interval = self.interval = step if interval == 0 else interval + 0.05 * (step - interval)
        values = self.values
        low, high, frac = self._position(at)
        miss = deviation - (values[low] * (1 - frac) + values[high] * frac)
        # Each variance winsorised against itself (the other's scale would cap it wrongly); inline: every sample.
        flat, season = self.flat_var, self.season_var
        square, cap = deviation * deviation, WINSOR * WINSOR * flat
        self.flat_var = flat + rate * ((square if flat <= 0 or square < cap else cap) - flat)
        square, cap = miss * miss, WINSOR * WINSOR * season
        self.season_var = season + rate * ((square if season <= 0 or square < cap else cap) - season)
        if interval <= 0:
            return
        # Each period weighs about a third: per visit of a bin, a third of the samples a bin gets.
        per_bin = self.period / len(values) / interval
        rate = max(1 / (3 * per_bin), 1 / (1 + (at - self.first_at) / self.period * per_bin))
        if rate > 0.5:
            rate = 0.5
        values[low] += rate * (1 - frac) * miss
        values[high] += rate * frac * miss


class Track:
    """One metric's expectation, spread and the state of its three channels."""

    __slots__ = ("count", "mean", "m2", "level", "var", "step", "spread", "last", "moves", "last_at",
                 "z", "fast", "slow", "fast_sq", "slow_sq", "tail", "net_z", "net_fast", "net_slow",
                 "excursion_since", "excursion_samples", "partner", "coupling", "profile", "expected_profile",
                 "unit_samples", "seasonal_on")

    def __init__(self, profile: Profile | None) -> None:
        self.count = 0  # normal samples learned since the metric first moved
        self.mean = 0.0
        self.m2 = 0.0
        self.level = 0.0
        self.var = 0.0
        self.step = math.inf  # the smallest move seen: a quantised signal's resolution
        self.spread = MIN_SPREAD  # of var and step, kept (read several times per sample): rescale() when they change
        self.last = math.nan
        self.moves = 0
        self.last_at = math.nan
        self.z = self.fast = self.slow = 0.0
        self.net_z = self.net_fast = self.net_slow = 0.0
        self.fast_sq = FAST_FLOOR ** 2
        self.slow_sq = SLOW_FLOOR ** 2
        self.tail = TAIL_START
        self.unit_samples = 0  # samples the channels' units were learned from
        self.seasonal_on = False
        self.excursion_since = math.nan
        self.excursion_samples = 0
        self.partner: Track | None = None
        # The partner's move times this is this metric's expected move, both in values (a regression slope):
        # their spreads (noise about the local mean) differ from their normal ranges, so a correlation alone
        # would not carry one metric's deviation over to the other's.
        self.coupling = 0.0
        self.profile = profile
        self.expected_profile = 0.0

    @property
    def ready(self) -> bool:
        return self.moves >= MIN_MOVES and self.count >= MIN_SAMPLES

    def rescale(self) -> None:
        floor = self.step / 2 if math.isfinite(self.step) else MIN_SPREAD
        self.spread = max(math.sqrt(self.var), floor, MIN_SPREAD)

    def seasonal(self, at: float) -> float:
        profile = self.profile
        active = profile is not None and profile.active(at)
        if active != self.seasonal_on:
            # Another expectation, other residuals: the channels' units are learned again.
            self.seasonal_on = active
            self.fast_sq, self.slow_sq, self.unit_samples = FAST_FLOOR ** 2, SLOW_FLOOR ** 2, 0
        return profile.at(at) if active else 0.0

    def spike_score(self) -> float:
        limit = SPIKE_MARGIN * self.tail
        return abs(self.net_z) / (limit if limit > SPIKE_Z else SPIKE_Z)

    def shift_score(self) -> float:
        # Conditionals rather than max(): this runs twice per sample and metric.
        unit = math.sqrt(self.fast_sq)
        fast = abs(self.net_fast) / (FAST_LIMIT * (unit if unit > FAST_FLOOR else FAST_FLOOR))
        unit = math.sqrt(self.slow_sq)
        slow = abs(self.net_slow) / (SLOW_LIMIT * (unit if unit > SLOW_FLOOR else SLOW_FLOOR))
        return fast if fast > slow else slow

    def settle(self) -> None:
        """Net deviations: what the partner explains (the same load change) does not count."""
        self.net_z, self.net_fast, self.net_slow = self.z, self.fast, self.slow
        partner = self.partner
        if partner is not None:
            scale = self.coupling * partner.spread / self.spread
            self.net_z = _unexplained(self.z, scale * partner.z)
            self.net_fast = _unexplained(self.fast, scale * partner.fast)
            self.net_slow = _unexplained(self.slow, scale * partner.slow)

    def restart(self) -> None:
        """Forget the statistics (the metric has not really started moving yet)."""
        self.count = 0
        self.mean = self.m2 = 0.0


def _winsorised(residual: float, var: float) -> float:
    """The squared residual, at most WINSOR spreads of ``var`` (any size while nothing is known)."""
    square = residual * residual
    return min(square, WINSOR * WINSOR * var) if var > 0 else square


def _clipped(value: float, limit: float) -> float:
    # As max(-limit, min(limit, value)) did: a NaN comes out as +limit, not NaN (a channel never turns NaN).
    return -limit if value < -limit else value if value <= limit else limit


def _unexplained(own: float, explained: float) -> float:
    rest = own - explained
    return rest if abs(rest) < abs(own) else own


class AdaptiveBaseline:
    __slots__ = ("alpha", "clip", "decay", "unit_memory_s", "scale_samples", "relearn_after_s", "period_s", "bins",
                 "tracks",
                 "_correlations", "_correlated")

    def __init__(self, alpha: float = 0.003, clip: float = 1.0, decay: float = 0.002, scale_samples: int = 300,
                 relearn_after_s: float = 3600.0, period_s: float = 86400.0, bins: int = 48,
                 unit_memory_s: float = 7 * 86400.0) -> None:
        self.alpha = alpha
        self.clip = clip
        self.decay = decay
        self.unit_memory_s = unit_memory_s
        self.scale_samples = scale_samples
        self.relearn_after_s = relearn_after_s
        self.period_s = period_s
        self.bins = bins
        self.tracks: dict[str, Track] = {}
        # Pairwise correlations in the warm-up, let go once the partners are chosen.
        self._correlations: partners.Correlations | None = {}
        self._correlated = 0

    def score_one(self, x: dict[str, float], at: float = 0.0) -> float:
        scored = []
        for name, value in x.items():
            track = self.tracks.get(name)
            if track is None or track.moves < MIN_MOVES or track.count < MIN_SAMPLES:  # not ready
                continue
            spread = track.spread
            if track.profile is not None:
                track.expected_profile = track.seasonal(at)
            z = (value - track.level - track.expected_profile) / spread
            track.z = z
            # Clipped, so a channel comes back within a few samples of a huge excursion's end; the slow
            # one at a few spreads: it is there for small lasting shifts, the others see the large ones.
            track.fast += FAST * (_clipped(z, FAST_CLIP) - track.fast)
            track.slow += SLOW * (_clipped(z, SLOW_CLIP) - track.slow)
            if track.count >= self.scale_samples:
                track.level += self.alpha * _clipped(z, self.clip) * spread
            scored.append(track)
        score = 0.0
        for track in scored:  # after every track moved: a partner's deviation is of this sample
            track.settle()
            spike, shift = track.spike_score(), track.shift_score()
            own = spike if spike > shift else shift
            self._follow_regime(track, own, at)
            if own > score:
                score = own
        return score

    def _follow_regime(self, track: Track, own: float, at: float) -> None:
        """A deviation that has lasted long enough becomes the new level (see the module's doc)."""
        if own <= 1:
            track.excursion_since, track.excursion_samples = math.nan, 0
            return
        if math.isnan(track.excursion_since):
            track.excursion_since = at
        track.excursion_samples += 1
        if track.excursion_samples >= MIN_RELEARN_SAMPLES and at - track.excursion_since >= self.relearn_after_s:
            track.level += track.fast * track.spread
            track.fast = track.slow = 0.0
            track.excursion_since, track.excursion_samples = math.nan, 0

    def learn_one(self, x: dict[str, float], at: float = 0.0) -> None:
        for name, value in x.items():
            track = self.tracks.get(name)
            if track is None:
                profile = Profile(self.period_s, self.bins) if self.bins else None
                track = self.tracks[name] = Track(profile)
            self._learn(track, value, at)
        if self._correlations is not None:
            self._correlate(x)

    def _learn(self, track: Track, value: float, at: float) -> None:
        scored = track.moves >= MIN_MOVES and track.count >= MIN_SAMPLES  # ready: score_one saw this sample
        moved = not math.isnan(track.last) and value != track.last
        if moved:
            track.moves += 1
            move = abs(value - track.last)
            if move < track.step:
                track.step = move
                track.rescale()
        elif track.moves == 0:
            track.restart()  # still flat from the start: nothing to learn a spread from
        track.last = value
        track.count += 1
        step = 0.0 if math.isnan(track.last_at) else max(at - track.last_at, 0.0)
        if track.count <= self.scale_samples:
            # Warm-up: the running mean and variance (Welford); the profile not yet.
            delta = value - track.mean
            track.mean += delta / track.count
            track.m2 += delta * (value - track.mean)
            track.level = track.mean
            track.var = track.m2 / (track.count - 1) if track.count > 1 else 0.0
            track.rescale()
            if track.count == self.scale_samples:
                track.mean = track.m2 = 0.0  # not needed after the warm-up: one float object less each
        else:
            # Around the slow channel's local mean, and trimmed: a drift (the mean moving a little each
            # sample) would otherwise widen the spread sample by sample until it never stands out.
            residual = value - track.level - track.expected_profile - track.slow * track.spread
            square = residual * residual
            if square <= TRIM * TRIM * track.var:
                track.var += self.decay * (square / TRIMMED_SHARE - track.var)
                track.rescale()
            if track.profile is not None:
                track.profile.learn(at, value - track.level, self.decay)
        track.last_at = at
        if not scored:
            return
        # The channels' own normal RMS: a running mean at first, then forgetting over unit_memory_s
        # (by time: a fault that develops over hours must not become the channels' unit).
        track.unit_samples += 1
        rate = step / self.unit_memory_s
        if rate > self.decay:
            rate = self.decay
        if rate < 1 / track.unit_samples:
            rate = 1 / track.unit_samples
        track.fast_sq += rate * (track.net_fast * track.net_fast - track.fast_sq)
        track.slow_sq += rate * (track.net_slow * track.net_slow - track.slow_sq)
        # A stochastic-approximation quantile of |z|: at equilibrium a share 1 - TAIL lies above it.
        # Only while the shift channels are calm: a drifting level is not a heavy tail.
        if track.shift_score() < TAIL_CALM:
            if abs(track.net_z) > track.tail:
                track.tail += TAIL_STEP * TAIL
            elif track.tail > TAIL_START:
                track.tail = max(TAIL_START, track.tail - TAIL_STEP * (1 - TAIL))

    def contributions(self) -> dict[str, float]:
        """Each metric's net signed deviation, in spreads (the larger of this sample's and the fast shift's)."""
        found = {}
        for name, track in self.tracks.items():
            if track.ready:
                found[name] = track.net_z if abs(track.net_z) >= abs(track.net_fast) else track.net_fast
        return found

    def _correlate(self, x: dict[str, float]) -> None:
        partners.correlate(self._correlations, x)
        self._correlated += 1
        # Also when a metric never moves: it cannot hold the others' partners back for ever.
        if self._correlated >= 2 * self.scale_samples or all(
                track.count >= self.scale_samples for track in self.tracks.values()):
            self._choose_partners()

    def _choose_partners(self) -> None:
        for name, (best, coupling) in partners.strongest(self._correlations, list(self.tracks), MIN_COUPLING).items():
            track, partner = self.tracks[name], self.tracks[best]
            # The warm-up's variances are the metrics' whole ranges (load changes included).
            ranges = math.sqrt(track.var / partner.var) if partner.var > 0 else 0.0
            track.partner, track.coupling = partner, coupling * ranges
        self._correlations = None
