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
Their relation is also a metric of its own (see :class:`Pair`), slower to adapt than any level.

On SKAB (1 Hz water pump, ``python -m bench.evaluate --skab ...``) this default scores F1 0.804
at FAR 12.0 %; on the zoo of synthetic streams (``python -m bench.zoo``) it finds every fault
with no false alert in 400,000 healthy samples; on the simulator fleet it catches every fault
before its failure point (median at 22 % of its course) with no false work order in 494 device-days.

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

import numpy

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
# A partner pair's relation tracks this much slower than a metric's level: physics does not drift, a
# fault that develops over a day does (see Pair).
PAIR_PACE = 0.1
# A quadratic relation is kept when it leaves at most this share of a line's residual sum of squares.
CURVE_GAIN = 0.8
# A relation's scores count at this fraction: a curve fitted to a warm-up is known less well than a level.
PAIR_WEIGHT = 1 / 1.5
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
                 "unit_samples", "seasonal_on", "relation", "calm")

    def __init__(self, profile: Profile | None, relation: bool = False) -> None:
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
        self.calm = True  # the shift channels were calm as the sample last scored (a bool: no float object)
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
        # A partner relation's (see Pair): its spread and units learn PAIR_PACE times as fast as a metric's.
        self.relation = relation

    @property
    def ready(self) -> bool:
        return self.moves >= MIN_MOVES and self.count >= MIN_SAMPLES

    def rescale(self) -> None:
        # Conditionals rather than max() and isfinite(): this runs for every sample learned.
        floor = self.step / 2
        if floor < MIN_SPREAD or floor == math.inf:
            floor = MIN_SPREAD
        spread = math.sqrt(self.var)
        self.spread = spread if spread > floor else floor

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


def _signed_larger(a: float, b: float) -> float:
    return a if abs(a) >= abs(b) else b


def _unexplained(own: float, explained: float) -> float:
    rest = own - explained
    return rest if abs(rest) < abs(own) else own


class Pair:
    """The relation of two partners as a metric of its own: ``response - f(predictor)``.

    Each metric's level follows a slow creep, so a fault developing over a day (a cavitating pump's
    flow falling while its motor current does not) is followed by both levels and never stands out.
    The relation between partners is physics: it is given a track of its own (spread, channels,
    regime relearning as any metric) whose level follows ``PAIR_PACE`` times as fast. ``f`` is a
    quadratic fitted to the warm-up when the curve explains the response clearly better than a line
    (a pump's pressure goes with the square of its flow), else a line. A deviation is told as the
    member that is moving (the larger own shift score): that metric left the relation.

    >>> flows = range(60, 120)
    >>> pair = Pair.fit("flow", "pressure", {"flow": array("f", flows), "pressure": array("f", (1.5 + 0.0003 * f * f
    ...                                                                                           for f in flows))})
    >>> pair.response, pair.predictor
    ('pressure', 'flow')
    >>> abs(pair.residual({"flow": 119.0, "pressure": 1.5 + 0.0003 * 119 * 119}) - pair.residual(
    ...     {"flow": 80.0, "pressure": 1.5 + 0.0003 * 80 * 80})) < 1e-5  # one curve, wherever on it
    True
    >>> pair.residual({"flow": 200.0, "pressure": 13.5}) is None  # beyond the range it was fitted on
    True
    >>> Pair.fit("flow", "pressure", {"flow": array("f", flows), "pressure": array("f", [1e39] * 60)}) is None
    True
    """

    __slots__ = ("response", "predictor", "center", "scale", "slope", "curve", "low", "high", "track")

    def __init__(self, response: str, predictor: str, center: float, scale: float, slope: float,
                 curve: float, low: float, high: float) -> None:
        self.response = response
        self.predictor = predictor
        self.center = center
        self.scale = scale
        self.slope = slope  # per scale of the predictor, at its centre
        self.curve = curve
        # The predictor's range the relation is known on: no curve is trusted outside its data.
        self.low, self.high = low, high
        self.track = Track(None, relation=True)

    @classmethod
    def fit(cls, a: str, b: str, columns: dict[str, array]) -> "Pair | None":
        """Whichever way round leaves less of the response unexplained: a square relation one way is a
        root the other way, which a quadratic does not follow (nor extrapolate). ``columns``: the warm-up's
        values of each metric, row by row (NaN where a sample lacked the metric, inf beyond single
        precision). None when fewer than MIN_SAMPLES rows have both."""
        first, second = (numpy.asarray(columns[name], dtype=numpy.float64) for name in (a, b))
        both = numpy.isfinite(first) & numpy.isfinite(second)
        if both.sum() < MIN_SAMPLES:
            return None
        first, second = first[both], second[both]
        one, unexplained_one = cls._fitted(a, first, b, second)
        other, unexplained_other = cls._fitted(b, second, a, first)
        return one if unexplained_one <= unexplained_other else other

    @classmethod
    def _fitted(cls, response: str, y: numpy.ndarray, predictor: str, p: numpy.ndarray) -> tuple["Pair", float]:
        """The relation of ``response`` (values ``y``) to ``predictor`` (values ``p``), and the share of the
        response's variance it leaves."""
        center, scale = float(p.mean()), float(p.std()) or 1.0
        u = (p - center) / scale
        line = numpy.column_stack([numpy.ones_like(u), u])
        (_, slope), *_ = numpy.linalg.lstsq(line, y, rcond=None)
        (_, curved_slope, curve), *_ = numpy.linalg.lstsq(numpy.column_stack([line, u * u]), y, rcond=None)
        line_rss = float(numpy.sum((y - y.mean() - slope * u) ** 2))
        curve_residual = y - curved_slope * u - curve * u * u
        curve_rss = float(numpy.sum((curve_residual - curve_residual.mean()) ** 2))
        total = float(numpy.sum((y - y.mean()) ** 2)) or 1.0
        low, high = float(p.min()), float(p.max())
        if curve_rss < CURVE_GAIN * line_rss:
            return cls(response, predictor, center, scale, float(curved_slope), float(curve), low, high), \
                curve_rss / total
        return cls(response, predictor, center, scale, float(slope), 0.0, low, high), line_rss / total

    def residual(self, x: dict[str, float]) -> float | None:
        """The response's distance from the relation, if both are in the sample and the predictor is within
        the range the relation was fitted on."""
        predictor, response = x.get(self.predictor), x.get(self.response)
        if response is None or predictor is None or not self.low <= predictor <= self.high:
            return None
        u = (predictor - self.center) / self.scale
        return response - u * (self.slope + self.curve * u)


class AdaptiveBaseline:
    __slots__ = ("alpha", "clip", "decay", "unit_memory_s", "scale_samples", "relearn_after_s", "period_s", "bins",
                 "tracks", "pairs",
                 "_correlations", "_correlated", "_warmup")

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
        self.pairs: tuple[Pair, ...] = ()
        # Pairwise correlations in the warm-up, let go once the partners are chosen.
        self._correlations: partners.Correlations | None = {}
        self._correlated = 0
        # The warm-up's values per metric, row by row, that the partners' relations are fitted to: single
        # precision columns (12 KB for a device of 5 metrics), let go with the correlations.
        self._warmup: dict[str, array] | None = {}

    def score_one(self, x: dict[str, float], at: float = 0.0) -> float:
        scored = []
        alpha = self.alpha
        for name, value in x.items():
            track = self.tracks.get(name)
            if track is None or track.moves < MIN_MOVES or track.count < MIN_SAMPLES:  # not ready
                continue
            if track.profile is not None:
                track.expected_profile = track.seasonal(at)
            # As _advance, inline: this runs for every metric of every sample.
            spread = track.spread
            z = track.z = (value - track.level - track.expected_profile) / spread
            track.fast += FAST * (_clipped(z, FAST_CLIP) - track.fast)
            track.slow += SLOW * (_clipped(z, SLOW_CLIP) - track.slow)
            if track.count >= self.scale_samples:
                track.level += alpha * _clipped(z, self.clip) * spread
            scored.append(track)
        relations = []
        for pair in self.pairs:
            track = pair.track
            if track.moves < MIN_MOVES or track.count < MIN_SAMPLES:
                continue
            residual = pair.residual(x)
            if residual is not None:
                self._advance(track, (residual - track.level) / track.spread, alpha * PAIR_PACE)
                relations.append(track)
        score = 0.0
        for weight, tracks in ((1.0, scored), (PAIR_WEIGHT, relations)):
            for track in tracks:  # after every track moved: a partner's deviation is of this sample
                if track.partner is None:  # settle(), inline: most metrics have no partner
                    track.net_z, track.net_fast, track.net_slow = track.z, track.fast, track.slow
                else:
                    track.settle()
                spike, shift = track.spike_score(), track.shift_score()
                track.calm = shift < TAIL_CALM
                own = (spike if spike > shift else shift) * weight
                if own > 1 or track.excursion_samples:
                    self._follow_regime(track, own, at)
                if own > score:
                    score = own
        return score

    def _advance(self, track: Track, z: float, alpha: float) -> None:
        """This sample's deviation (in spreads) into the track's channels, and its level a step towards it."""
        track.z = z
        # Clipped, so a channel comes back within a few samples of a huge excursion's end; the slow
        # one at a few spreads: it is there for small lasting shifts, the others see the large ones.
        track.fast += FAST * (_clipped(z, FAST_CLIP) - track.fast)
        track.slow += SLOW * (_clipped(z, SLOW_CLIP) - track.slow)
        if track.count >= self.scale_samples:
            track.level += alpha * _clipped(z, self.clip) * track.spread

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
        for pair in self.pairs:
            residual = pair.residual(x)
            if residual is not None:
                self._learn(pair.track, residual, at)
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
        step = at - track.last_at
        if not step > 0:  # before, at the same time, or the first sample (NaN)
            step = 0.0
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
            # sample) would otherwise widen the spread sample by sample until it never stands out. A
            # relation does not drift: around its level, so a relation drifting apart does not widen it.
            if track.relation:
                residual, decay = value - track.level, self.decay * PAIR_PACE
            else:
                residual, decay = value - track.level - track.expected_profile - track.slow * track.spread, self.decay
            square = residual * residual
            if square <= TRIM * TRIM * track.var:
                track.var += decay * (square / TRIMMED_SHARE - track.var)
                track.rescale()
            if track.profile is not None:
                track.profile.learn(at, value - track.level, self.decay)
        track.last_at = at
        if not scored:
            return
        # A stochastic-approximation quantile of |z|: at equilibrium a share 1 - TAIL lies above it.
        # Only while the shift channels are calm (as this sample was scored): a drifting level is not a
        # heavy tail.
        if track.calm:
            if abs(track.net_z) > track.tail:
                track.tail += TAIL_STEP * TAIL
            elif track.tail > TAIL_START:
                track.tail = max(TAIL_START, track.tail - TAIL_STEP * (1 - TAIL))
        # The channels' own normal RMS: a running mean at first, then forgetting over unit_memory_s
        # (by time: a fault that develops over hours must not become the channels' unit).
        track.unit_samples += 1
        rate = step / self.unit_memory_s
        if rate > self.decay:
            rate = self.decay
        if track.relation:
            # The running mean only for a first estimate: a relation drifting apart over a day must not
            # become its units.
            rate *= PAIR_PACE
            if track.unit_samples <= self.scale_samples:
                rate = 1 / track.unit_samples
        elif rate < 1 / track.unit_samples:
            rate = 1 / track.unit_samples
        track.fast_sq += rate * (track.net_fast * track.net_fast - track.fast_sq)
        track.slow_sq += rate * (track.net_slow * track.net_slow - track.slow_sq)

    def contributions(self) -> dict[str, float]:
        """Each metric's net signed deviation, in spreads (the larger of this sample's and the fast shift's)."""
        found = {}
        for name, track in self.tracks.items():
            if track.ready:
                found[name] = _signed_larger(track.net_z, track.net_fast)
        for pair in self.pairs:
            response, predictor = self.tracks[pair.response], self.tracks[pair.predictor]
            if not (pair.track.ready and response.ready and predictor.ready):
                continue
            deviation = _signed_larger(pair.track.z, pair.track.fast)
            # The member that is moving left the relation; the predictor's share points the other way.
            name = pair.response
            if predictor.shift_score() > response.shift_score():
                name, deviation = pair.predictor, -deviation if pair.slope > 0 else deviation
            if abs(deviation) > abs(found[name]):
                found[name] = deviation
        return found

    def _correlate(self, x: dict[str, float]) -> None:
        partners.correlate(self._correlations, x)
        columns, rows = self._warmup, self._correlated
        for name in x.keys() - columns.keys():
            columns[name] = array("f", [math.nan]) * rows  # a metric that came later: nothing before it
        for name, column in columns.items():
            column.append(x.get(name, math.nan))
        self._correlated += 1
        # Also when a metric never moves: it cannot hold the others' partners back for ever.
        if self._correlated >= 2 * self.scale_samples or all(
                track.count >= self.scale_samples for track in self.tracks.values()):
            self._choose_partners()

    def _choose_partners(self) -> None:
        pairs = {}
        for name, (best, coupling) in partners.strongest(self._correlations, list(self.tracks), MIN_COUPLING).items():
            track, partner = self.tracks[name], self.tracks[best]
            # The warm-up's variances are the metrics' whole ranges (load changes included).
            ranges = math.sqrt(track.var / partner.var) if partner.var > 0 else 0.0
            track.partner, track.coupling = partner, coupling * ranges
            # One relation per two partners, whichever chose the other (flow and current choose each other).
            key = (name, best) if name < best else (best, name)
            if key not in pairs and track.coupling != 0:
                pairs[key] = Pair.fit(name, best, self._warmup)
        self.pairs = tuple(pair for pair in pairs.values() if pair is not None)
        self._correlations = self._warmup = None
