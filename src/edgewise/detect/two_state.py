"""Two-state streams (a door contact, a pump-running flag, an alarm input): scored by how
long each state lasts and how often the stream switches, not by its level.

A level detector reads every switch of such a stream as a jump: a door opened about 60
times a week at random raised 18 alarms in the week under ``context-likelihood``. What
is unusual about a door is a state lasting longer than it ever does (left open, a stuck
contact) or a burst of switches (flapping, a faulty reed); :class:`TwoState` scores
those. :class:`StateAware` runs it beside a level detector and lets it score only while
the stream has shown just two values and it has seen enough of each state; the first
third value hands the stream to the level detector for good.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
from scipy.special import betainc, stdtr

from edgewise.detect.base import Detector, first_finite, reading, readings
from edgewise.detect.zscore import _update_py
from edgewise.params import Interval, validate_params

__all__ = ["StateAware", "TwoState"]


def _count_tail(k: int, events: float, readings: float, window: int) -> float:
    """P(K >= k) for the events in the next ``window`` readings, having seen ``events`` in
    ``readings``: the negative binomial predictive of a Poisson rate with a Jeffreys prior.
    Few readings behind the rate widen the tail (a plain Poisson at the estimated rate
    alarmed on the second burst of a door opened a few times).

    >>> f"{_count_tail(3, 60, 10080, 60):.4f}", _count_tail(0, 1, 10, 60)
    ('0.0062', 1.0)
    >>> _count_tail(3, 0, 60, 60) > 0.01          # three openings, none seen in an hour
    True
    """
    if k <= 0:
        return 1.0
    return float(betainc(k, events + 0.5, window / (readings + window)))


class TwoState(Detector):
    """Run lengths and switch bursts of a stream that takes two values.

    The first two distinct values are the states. For each state the detector keeps an
    exponentially weighted mean and deviation of the log length (in readings) of its
    completed runs; a run still going scores by how unlikely it is to last this long
    (upper tail, log-normal; Student t while few runs are behind it). It also counts
    entries into the second state over the last ``rate_window`` readings; a count unlikely
    under the stream's long-run rate (negative binomial upper tail) scores too. The score
    is ``-log10(p) / tail_digits`` of the smaller tail ``p``, clipped to [0, 1], so the
    default threshold 0.9 is ``p`` of about 1e-4. A third value scores 1.

    Parameters
    ----------
    warmup_runs
        Completed runs of each state before anything scores above 0.
    alpha
        Weight of the newest run in each state's log-length mean and variance.
    rate_window
        Readings over which entries into the second state are counted.
    rate_alpha
        Weight of the newest reading in the long-run entry rate.
    sd_min
        Least deviation of log run length: a stream as regular as a clock still varies
        by a reading or two.
    tail_digits
        Tail probability ``10 ** -tail_digits`` scores 1.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> x = np.zeros(10080)                     # a door, a reading a minute, for a week
    >>> for s in rng.choice(10000, 60, replace=False):
    ...     x[s:s + rng.integers(1, 10)] = 1.0  # opened 60 times, 1-9 minutes each
    >>> int((TwoState().score_many(x) >= 0.9).sum())
    0
    >>> x[9000:9180] = 1.0                      # then left open for three hours
    >>> bool((TwoState().score_many(x)[9000:9180] >= 0.9).any())
    True
    """

    _constraints: ClassVar[dict[str, Any]] = {
        "warmup_runs": Interval(int, 1, None),
        "alpha": Interval(float, 0.0, 1.0, closed="neither"),
        "rate_window": Interval(int, 2, None),
        "rate_alpha": Interval(float, 0.0, 1.0, closed="neither"),
        "sd_min": Interval(float, 0.0, None, closed="neither"),
        "tail_digits": Interval(float, 0.0, None, closed="neither"),
    }

    def __init__(self, warmup_runs: int = 2, alpha: float = 0.05, rate_window: int = 60,
                 rate_alpha: float = 1e-3, sd_min: float = 0.2,
                 tail_digits: float = 4.5) -> None:
        validate_params(self._constraints, {
            "warmup_runs": warmup_runs, "alpha": alpha, "rate_window": rate_window,
            "rate_alpha": rate_alpha, "sd_min": sd_min, "tail_digits": tail_digits}, self)
        self.warmup_runs = warmup_runs
        self.alpha = alpha
        self.rate_window = rate_window
        self.rate_alpha = rate_alpha
        self.sd_min = sd_min
        self.tail_digits = tail_digits
        self.states_: list[float] = []
        self.cur_ = -1            # index of the current state, -1 before the first value
        self.run_ = 0             # readings in the current run
        self.seen_start_ = False  # whether the current run's start was seen
        self.n_runs_ = [0, 0]
        self.mu_ = [0.0, 0.0]     # mean of log run length, per state
        self.var_ = [0.0, 0.0]
        self.n_ = 0
        self.rate_ = 0.0          # long-run entries into state 1 per reading
        self.ring_ = np.zeros(rate_window, dtype=np.int8)
        self.in_window_ = 0       # entries into state 1 in the ring

    # -- helpers -----------------------------------------------------------------------
    def _index(self, v: float) -> int:
        """0 or 1 for a known state, 2 for a third value, -1 while the states are unknown
        and ``v`` would be one of them."""
        for i, s in enumerate(self.states_):
            if v == s:
                return i
        return 2 if len(self.states_) == 2 else -1

    @property
    def warm(self) -> bool:
        """Whether both states have ``warmup_runs`` completed runs."""
        return min(self.n_runs_) >= self.warmup_runs

    @property
    def flipping(self) -> bool:
        """Whether the stream reads as two-state: a run has completed (it went to one
        value and back), or its two values are 0 and 1 (a boolean, stored as 1/0)."""
        return sum(self.n_runs_) > 0 or sorted(self.states_) == [0.0, 1.0]

    def _tail(self, idx: int, new_run: int, entries: int) -> float:
        # the parameters as Python floats: NumPy float32 ones (read from an array) made the
        # arithmetic, the entry rate and the score float32 (np.float32 * float is float32)
        alpha, sd_min, rate_alpha = float(self.alpha), float(self.sd_min), float(self.rate_alpha)
        p = 1.0
        n = self.n_runs_[idx]
        if n > 1:
            # Student t predictive tail: a handful of runs pins a spread poorly (7 random
            # door gaps gave a deviation of 0.46 in log length where the truth is ~1.3)
            n_eff = min(n, (2.0 - alpha) / alpha)
            sd = max(math.sqrt(self.var_[idx] * n_eff / (n_eff - 1.0)), sd_min)
            t = (math.log(new_run) - self.mu_[idx]) / (sd * math.sqrt(1.0 + 1.0 / n_eff))
            if t > 0:
                p = float(stdtr(n_eff - 1.0, -t))
        n_eff = min(float(self.n_), 1.0 / rate_alpha)
        if entries > self.rate_ * self.rate_window:
            p = min(p, _count_tail(entries, self.rate_ * n_eff, n_eff, self.rate_window))
        return p

    # -- Detector ----------------------------------------------------------------------
    def score_one(self, x: Mapping[str, float]) -> float:
        v = first_finite(x)
        if v is None or not self.warm:
            return 0.0
        idx = self._index(v)
        if idx == 2:
            return 1.0
        new_run = self.run_ + 1 if idx == self.cur_ else 1
        entered = 1 if (idx == 1 and idx != self.cur_) else 0
        entries = self.in_window_ - int(self.ring_[self.n_ % self.rate_window]) + entered
        p = self._tail(idx, new_run, entries)
        if p >= 1.0:
            return 0.0
        return min(max(-math.log10(max(p, 1e-300)) / float(self.tail_digits), 0.0), 1.0)

    def learn_one(self, x: Mapping[str, float]) -> None:
        v = first_finite(x)
        if v is None:
            return
        idx = self._index(v)
        if idx == -1:
            self.states_.append(v)
            idx = len(self.states_) - 1
        if idx == 2:
            return  # a third value: scored, never learned
        entered = 0
        if idx == self.cur_:
            self.run_ += 1
        else:
            if self.cur_ >= 0 and self.seen_start_:
                self._finish_run(self.cur_, self.run_)
            self.seen_start_ = self.cur_ >= 0
            entered = 1 if idx == 1 and self.cur_ >= 0 else 0
            self.cur_ = idx
            self.run_ = 1
        slot = self.n_ % self.rate_window
        self.in_window_ += entered - int(self.ring_[slot])
        self.ring_[slot] = entered
        self.n_ += 1
        a = max(float(self.rate_alpha), 1.0 / self.n_)
        self.rate_ += a * (entered - self.rate_)

    def _finish_run(self, idx: int, length: int) -> None:
        # EWZScore's running mean and variance step, on the log run length
        self.n_runs_[idx], self.mu_[idx], self.var_[idx] = _update_py(
            self.n_runs_[idx], self.mu_[idx], self.var_[idx], math.log(length), self.alpha)

    @classmethod
    def _unit_test_params(cls) -> list[dict[str, Any]]:
        return [{}, {"warmup_runs": 1, "rate_window": 10}]


class StateAware(Detector):
    """A level detector that hands two-state streams to :class:`TwoState`.

    Both learn every reading. Once the stream, showing no more than two distinct values,
    has gone to one and back (a run completed), or its two values are 0 and 1 (booleans
    are stored as 1/0), the score is :class:`TwoState`'s (0 until it has ``warmup_runs``
    runs of each state); before that, and for good from the first third value, it is the
    level detector's. A flat line that steps once to a new level is still the level
    detector's to score. This is the gateway's
    per-metric default: a fleet mixes levels with door contacts and on/off flags
    (booleans are stored as 1/0), and nobody says which is which.

    Parameters
    ----------
    base
        Name of the level detector (see :data:`edgewise.detect.DETECTORS`).
    warmup_runs
        :class:`TwoState`'s ``warmup_runs``.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> door = np.zeros(10080)
    >>> for s in rng.choice(10000, 60, replace=False):
    ...     door[s:s + rng.integers(1, 10)] = 1.0
    >>> from edgewise.detect import ContextLikelihood
    >>> int((ContextLikelihood().score_many(door) >= 0.9).sum()) > 10
    True
    >>> int((StateAware().score_many(door) >= 0.9).sum())
    0
    """

    _constraints: ClassVar[dict[str, Any]] = {"warmup_runs": Interval(int, 1, None)}

    def __init__(self, base: str = "context-likelihood", warmup_runs: int = 2) -> None:
        from edgewise.detect import get_detector

        validate_params(self._constraints, {"warmup_runs": warmup_runs}, self)
        self.base = base
        self.warmup_runs = warmup_runs
        self.base_: Detector = get_detector(base)
        self.two_: TwoState | None = TwoState(warmup_runs=warmup_runs)

    @property
    def two_state_(self) -> bool:
        """Whether :class:`TwoState` scores the stream now."""
        return self.two_ is not None and self.two_.flipping

    @property
    def two_valued_(self) -> bool:
        """Whether the stream has shown at most two values so far (it may be two-state)."""
        return self.two_ is not None

    @property
    def is_counter(self) -> bool:
        """Whether the level detector scores the stream as a cumulative counter."""
        return bool(getattr(self.base_, "is_counter", False))

    @property
    def warming_up(self) -> bool:
        """Whether the level detector is still in a warm-up that fixes what it learns for
        good (see :attr:`ContextLikelihood.warming_up`); False for one without."""
        return bool(getattr(self.base_, "warming_up", False))

    def learnable(self, v: float) -> float:
        """What to learn of a reading ``v`` flagged as a spike: the level detector's
        ``learnable`` (:meth:`ContextLikelihood.learnable`), ``v`` itself on a stream that
        may be two-state or for a level detector without one."""
        held = getattr(self.base_, "learnable", None)
        return v if self.two_ is not None or held is None else float(held(v))

    def score_one(self, x: Mapping[str, float]) -> float:
        two = self.two_
        if two is not None:
            v = first_finite(x)
            if v is None:
                if two.flipping:
                    return 0.0  # a missing reading of a two-state stream
            # a third value is the level detector's (from now on); a boolean's first switch
            # is already two-state
            elif two._index(v) != 2 and (two.flipping or {*two.states_, v} == {0.0, 1.0}):
                return two.score_one(x)
        return self.base_.score_one(x)

    def learn_one(self, x: Mapping[str, float]) -> None:
        self.base_.learn_one(x)
        two = self.two_
        if two is None:
            return
        v = first_finite(x)
        if v is not None and two._index(v) == 2:
            self.two_ = None
            return
        two.learn_one(x)

    def score_many(self, X: np.ndarray, columns: Sequence[str] | None = None) -> np.ndarray:
        """The loop while the stream may be two-state; the level detector's compiled
        replay from the first third value on."""
        X, names = readings(X, columns)
        out = np.empty(len(X))
        i = 0
        while i < len(X) and self.two_ is not None:
            x = reading(names, X[i])
            out[i] = self.score_one(x)
            self.learn_one(x)
            i += 1
        if i < len(X):
            out[i:] = self.base_.score_many(X[i:], names)
        return out

    def explain_one(self, x: Mapping[str, float]) -> dict[str, float]:
        return self.base_.explain_one(x)

    @classmethod
    def _unit_test_params(cls) -> list[dict[str, Any]]:
        return [{}, {"base": "ewzscore", "warmup_runs": 1}]
