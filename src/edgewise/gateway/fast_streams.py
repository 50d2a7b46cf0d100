"""Fast streams: a per-metric alarm on a stream read more than once a minute must also be
a magnitude, and a stuck sensor alarms.

The per-metric level detectors were designed on NAB, whose streams are read every 5
minutes to an hour. Read once a second, a sensor's noise alone sets off their novelty
signals: on a simulated pump fleet (``edgewise bench fleet``), every false alert of the
per-metric detectors peaked at a score of 1.0 (a sequence break or a new extreme), mostly
at readings within 3 standard deviations of the stream's running mean. So, on a stream
whose typical interval is under ``fast_interval_s``:

* **Magnitude.** A metric's score is capped at ``threshold * z / k``, where ``z`` is
  the reading's distance from an exponentially weighted mean of the stream in its
  exponentially weighted standard deviations (weight ``alpha``, after a plain mean and
  variance over the first ``warmup`` readings): an alarm needs ``z >= k``. ``k`` is
  ``min_z`` (3, the control chart's limit), or more where the stream is read so often that
  Gaussian noise would pass ``min_z`` more than ``noise_per_h`` times an hour: 3.34 for a
  reading every 30 s, 4.19 once a second (:meth:`FastStreamGate.needed_z`). A control
  chart's 3 sd is for a few samples an hour; read 3600 times an hour, noise alone passes it
  about 10 times. Slower streams are scored as they are, so nothing NAB measured
  changes.
* **Stuck.** A sensor that repeats its value is flagged by the stream cleaner, but that
  was a count, and a stuck value sits at a plausible level, so the magnitude test would
  hide it. A run of ``L >= stuck_min`` identical readings scores 1, once per run, when
  ``p ** (L - 1) < stuck_p``, ``p`` being how often the stream repeated its previous
  value so far (add-one smoothed): a noisy sensor alarms at 20 repeats, a coarsely
  quantised one only after a run it would almost never make.

Two-state streams (a door contact, a running flag: how long each state lasts is scored)
are exempt from both. A cumulative counter's increments are gated as a level under a key of
their own (the pipeline passes each increment, a rise over a gap of lost readings as its
share of one typical interval (:meth:`FastStreamGate.interval_s`), not learned; a step
backwards is left ungated: it always alarms): a 1 Hz meter's noisy increments raised 6-7
alerts an hour ungated, and each gap of 5 s or more one.

>>> gate = FastStreamGate(warmup=5)
>>> s = [gate.observe(("p", "a"), i * 10**9, 10.0 + (i % 3) * 0.1, 0.0) for i in range(40)]
>>> gate.is_fast(("p", "a"))
True
>>> gate.observe(("p", "a"), 40 * 10**9, 10.1, 1.0) < 0.9   # a novelty at an ordinary level
True
>>> gate.observe(("p", "a"), 41 * 10**9, 14.0, 1.0)         # ... and one far off it
1.0
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

from edgewise.detect.base import DEFAULT_THRESHOLD
from edgewise.params import Interval, validate_params

__all__ = ["FastStreamGate"]

#: weight of the exponentially weighted mean of the log sampling interval
_INTERVAL_ALPHA = 0.05
_ND = NormalDist()
#: intervals seen before a stream can be called fast
_MIN_INTERVALS = 10


@dataclass(slots=True)
class _Stream:
    last_ns: int | None = None
    log_interval: float = 0.0  # EW mean of log(seconds between readings)
    intervals: int = 0
    n: int = 0
    mean: float = 0.0
    var: float = 0.0
    last: float = math.nan
    run: int = 0
    repeats: int = 0  # of the n - 1 readings after the first, those equal to the one before
    fired: bool = False


class FastStreamGate:
    """Per (device, metric) stream: cap scores of fast streams below a magnitude, flag stuck runs.

    Parameters
    ----------
    fast_interval_s
        A stream whose typical interval (the geometric mean of its recent intervals, so
        an outage does not make it slow) is under this many seconds is fast.
    min_z
        Standard deviations from the running mean a fast stream's reading needs to alarm,
        at least.
    noise_per_h
        How often an hour Gaussian noise may pass the needed distance: it raises ``min_z``
        on streams read more often (0: ``min_z`` whatever the rate).
    alpha
        Weight of the running mean and variance after the warm-up.
    warmup
        Readings of a plain mean and variance before any score is changed.
    stuck_min, stuck_p
        A run of identical readings alarms once it is at least ``stuck_min`` long and the
        stream's own repeat rate makes it less likely than ``stuck_p``.
    threshold
        The alert threshold the capped scores are read against.

    Attributes
    ----------
    streams_
        What is learned per ``(device, metric)``: its interval, running mean and variance,
        and repeat counts (saved with the gateway's detector state).
    """

    def __init__(self, fast_interval_s: float = 60.0, min_z: float = 3.0,
                 alpha: float = 0.002, warmup: int = 280, stuck_min: int = 20,
                 stuck_p: float = 1e-6, threshold: float = DEFAULT_THRESHOLD,
                 noise_per_h: float = 0.1) -> None:
        validate_params({"fast_interval_s": Interval(float, 0.0, None, closed="neither"),
                         "min_z": Interval(float, 0.0, None, closed="neither"),
                         "alpha": Interval(float, 0.0, 1.0, closed="right"),
                         "warmup": Interval(int, 2, None),
                         "stuck_min": Interval(int, 2, None),
                         "stuck_p": Interval(float, 0.0, 1.0, closed="neither"),
                         "threshold": Interval(float, 0.0, 1.0, closed="neither"),
                         "noise_per_h": Interval(float, 0.0, None)},
                        {"fast_interval_s": fast_interval_s, "min_z": min_z, "alpha": alpha,
                         "warmup": warmup, "stuck_min": stuck_min, "stuck_p": stuck_p,
                         "threshold": threshold, "noise_per_h": noise_per_h}, self)
        self.fast_interval_s = fast_interval_s
        self.min_z = min_z
        self.alpha = alpha
        self.warmup = warmup
        self.stuck_min = stuck_min
        self.stuck_p = stuck_p
        self.threshold = threshold
        self.noise_per_h = noise_per_h
        # in logs, with a margin: a stream read exactly once a minute is not fast
        self._fast_log = math.log(fast_interval_s) - 1e-9
        self.streams_: dict[tuple[str, str], _Stream] = {}
        #: whether the last :meth:`observe` scored a stuck run (1.0 whatever its level)
        self.stuck_fired = False

    def is_fast(self, key: tuple[str, str]) -> bool:
        """Whether the stream ``(device, metric)`` is read more often than ``fast_interval_s``."""
        st = self.streams_.get(key)
        return st is not None and self._fast(st)

    def interval_s(self, key: tuple[str, str]) -> float | None:
        """The typical interval of ``key`` in seconds (the geometric mean of its recent
        intervals); ``None`` before it has had enough intervals to tell.

        >>> gate = FastStreamGate()
        >>> for i in range(12):
        ...     _ = gate.observe(("p", "a"), i * 2 * 10**9, 1.0, 0.0)
        >>> gate.interval_s(("p", "a")), gate.interval_s(("p", "b"))
        (2.0, None)
        """
        st = self.streams_.get(key)
        if st is None or st.intervals < _MIN_INTERVALS:
            return None
        return math.exp(st.log_interval)

    def last_reading(self, key: tuple[str, str]) -> tuple[int, float] | None:
        """The time (the newest seen) and value (the last observed) of ``key``'s last
        reading, kept with what is learned (:attr:`streams_`); ``None`` for a stream unseen.

        >>> gate = FastStreamGate()
        >>> _ = gate.observe(("p", "kwh"), 5 * 10**9, 12.5, 0.0)
        >>> gate.last_reading(("p", "kwh")), gate.last_reading(("p", "x"))
        ((5000000000, 12.5), None)
        """
        st = self.streams_.get(key)
        if st is None or st.last_ns is None or not math.isfinite(st.last):
            return None
        return st.last_ns, st.last

    def _fast(self, st: _Stream) -> bool:
        return st.intervals >= _MIN_INTERVALS and st.log_interval < self._fast_log

    def observe(self, key: tuple[str, str], ts_ns: int, value: float, score: float, *,
                level: bool = True, learn: bool = True) -> float:
        """The score to alert on for this reading of ``key``, given the detector's ``score``;
        learns the reading. ``level=False`` (a two-state stream, a counter's step backwards)
        leaves the score as it is. ``learn=False`` (a reading the cleaner flagged as a
        spike) keeps the value out of the running mean and deviation, which one glitch would
        widen for about a thousand readings. Readings must come in the order they are scored."""
        st = self.streams_.get(key)
        if st is None:
            st = self.streams_[key] = _Stream()
        x = float(value)
        if not math.isfinite(x):
            return score
        if st.last_ns is not None and ts_ns > st.last_ns:
            lg = math.log((ts_ns - st.last_ns) / 1e9)
            st.log_interval = lg if st.intervals == 0 else (
                st.log_interval + _INTERVAL_ALPHA * (lg - st.log_interval))
            st.intervals += 1
        if st.last_ns is None or ts_ns > st.last_ns:
            st.last_ns = ts_ns
        gated = score
        self.stuck_fired = False
        fast = level and self._fast(st)
        if fast and st.n >= self.warmup:
            d = abs(x - st.mean)
            sd = math.sqrt(st.var)
            z = d / sd if sd > 0 else (math.inf if d > 0 else 0.0)
            need = self._needed_z(st)
            if z < need:
                gated = min(score, self.threshold * z / need)
        if st.n > 0:
            repeat = x == st.last
            st.run = st.run + 1 if repeat else 1
            if not repeat:
                st.fired = False
            pairs = st.n - 1  # readings so far that had one before them
            if fast and pairs >= self.warmup and not st.fired and st.run >= self.stuck_min:
                p = (st.repeats + 1) / (pairs + 2)
                if p ** (st.run - 1) < self.stuck_p:
                    gated = 1.0
                    st.fired = self.stuck_fired = True
        else:
            st.run = 1
        st.last = x
        if learn and self._learn(st, x):
            # a share of the learned readings, as n is (one left out, see _learn, is not)
            st.repeats += st.n > 1 and st.run > 1
        return gated

    def needed_z(self, key: tuple[str, str]) -> float:
        """The distance from its running mean, in running standard deviations, a reading
        of ``key`` needs to keep its score: ``min_z``, or more on a stream read so often
        that Gaussian noise would pass ``min_z`` more than ``noise_per_h`` times an hour.

        >>> gate = FastStreamGate()
        >>> for i in range(20):
        ...     _ = gate.observe(("p", "a"), i * 10**9, float(i % 2), 0.0)
        >>> round(gate.needed_z(("p", "a")), 2)   # read once a second
        4.19
        """
        st = self.streams_.get(key)
        return self.min_z if st is None else self._needed_z(st)

    def _needed_z(self, st: _Stream) -> float:
        k = self.min_z
        if self.noise_per_h > 0:
            per_h = 3600.0 / math.exp(st.log_interval)
            p = min(0.5, self.noise_per_h / per_h)
            k = max(k, _ND.inv_cdf(1.0 - p / 2.0))
        return k

    def _learn(self, st: _Stream, x: float) -> bool:
        """Learn ``x`` into the running mean and variance; whether it was (see below)."""
        # a reading whose update would take the mean or variance past the largest float
        # (a sentinel such as 1.7e308, readings swinging between +-1e308) is not learned:
        # an infinite variance is never finite again, and every later reading of the
        # stream would lie 0 deviations off its mean, its alarms capped at 0 for good.
        # In the warm-up (nothing capped yet) the warm-up starts again from the reading
        # instead, so a sentinel first cannot hold the stream's mean for good.
        # A finite reading so far off that its update rounds the stream's whole learned
        # variance away (``var + t == t`` for its term ``t``: about 1.5e9 deviations at the
        # default alpha, a 1e100 in a stream of 20 +- 0.5) is not learned either: learned,
        # it set the mean and deviation on its own, and every later reading lay well within
        # one deviation of the mean, its alarms capped for some 200,000 readings (the
        # variance decays by 1 - alpha a reading: 2.6 days at 1 Hz) while the reading
        # itself alarms. A stream of zero variance (constant so far) learns any reading, as
        # before; a nearer one (1e6 there: 2e6 deviations) is learned as before too.
        n = st.n + 1
        d = x - st.mean
        if n <= self.warmup:  # a plain mean and variance over the warm-up
            mean = st.mean + d / n
            t = d * (x - mean)
            var = st.var + (t - st.var) / n
        else:
            mean = st.mean + self.alpha * d
            t = self.alpha * d * d
            var = (1.0 - self.alpha) * (st.var + t)
        if math.isfinite(mean) and math.isfinite(var):
            if st.var > 0.0 and st.var + t == t:
                return False
            st.n, st.mean, st.var = n, mean, var
            return True
        if n <= self.warmup:
            st.n, st.mean, st.var, st.repeats = 1, x, 0.0, 0
        return False

    def forget(self, device_id: str) -> None:
        """Drop every stream of ``device_id``."""
        for k in [k for k in self.streams_ if k[0] == device_id]:
            del self.streams_[k]
