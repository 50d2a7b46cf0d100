"""Use a River anomaly detector as an Edgewise detector (River is an optional dependency).

Scores are in [0, 1]; high means anomalous. :class:`RiverDetector` passes a River model's
own score through (clipped to that range), uncalibrated: River's scores mean different
things per model. :class:`RiverHalfSpaceTrees` calibrates HalfSpaceTrees' score, so that
0.9 (``DEFAULT_THRESHOLD``) means what it means for every Edgewise detector.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Mapping
from typing import Any, ClassVar

from edgewise.detect.base import Detector
from edgewise.errors import InvalidParameterError
from edgewise.params import Interval, validate_params

__all__ = ["RiverDetector", "RiverHalfSpaceTrees"]


def _river() -> tuple[Any, Any]:
    try:
        from river import anomaly, preprocessing
    except ImportError:  # pragma: no cover - river is installed with the dev extra
        raise ImportError("River detectors need the 'river' package: pip install river") from None
    return anomaly, preprocessing


class RiverDetector(Detector):
    """Wrap any River anomaly detector (or pipeline) that has ``score_one``/``learn_one``.

    Parameters
    ----------
    model
        The River model; it is used as is, not copied.

    Examples
    --------
    >>> from river import anomaly
    >>> det = RiverDetector(anomaly.HalfSpaceTrees(seed=1))
    >>> det.learn_one({"x": 0.5}); 0.0 <= det.score_one({"x": 0.5}) <= 1.0
    True
    """

    def __init__(self, model: Any) -> None:
        # checked here, not at the first reading: a class (``anomaly.HalfSpaceTrees``, not
        # ``anomaly.HalfSpaceTrees()``), a name or None failed later with an AttributeError
        # or a "missing argument" TypeError from deep in the stream
        if isinstance(model, type) or not all(
                callable(getattr(model, m, None)) for m in ("score_one", "learn_one")):
            raise InvalidParameterError(
                f"The 'model' parameter of {type(self).__name__} must be a River anomaly "
                f"detector instance, with score_one and learn_one (anomaly.HalfSpaceTrees(), "
                f"not the class). Got {model!r} instead.")
        self.model = model

    def learn_one(self, x: Mapping[str, float]) -> None:
        """Learn one reading (NaN values are dropped first)."""
        clean = {k: float(v) for k, v in x.items() if math.isfinite(v)}
        if clean:
            self.model.learn_one(clean)

    def score_one(self, x: Mapping[str, float]) -> float:
        """River's score, clipped to [0, 1]."""
        clean = {k: float(v) for k, v in x.items() if math.isfinite(v)}
        if not clean:
            return 0.0
        s = float(self.model.score_one(clean))
        return min(max(s, 0.0), 1.0) if math.isfinite(s) else 1.0

    def clone(self) -> RiverDetector:
        """A fresh wrapper around River's own clone of the model."""
        return type(self)(self.model.clone())


def _order_kept(u: float) -> float:
    """:class:`RiverHalfSpaceTrees`' score of the rescaled mass ``u``: ``u`` from 0.5 up
    (1 at most), below that ``0.5 exp(2u - 1)``, which meets it smoothly and keeps the
    readings' order all the way down.

    >>> [round(_order_kept(u), 3) for u in (-3.0, 0.0, 0.5, 0.9, 2.0)]
    [0.0, 0.184, 0.5, 0.9, 1.0]
    """
    return min(u, 1.0) if u >= 0.5 else 0.5 * math.exp(2.0 * u - 1.0)


#: Learned readings whose rescaled masses set the anchor (:func:`_anchor`).
_SEEN = 1000
#: Readings learned between two updates of the anchor.
_ANCHOR_EVERY = 10
#: The lowest anchor: 0.9 of the way from the usual mass to the floor, as before.
_ANCHOR_MIN = 0.9
#: The anchor lies this share of the way from the 99th percentile of the seen to 1.
_LIFT = 0.4
#: How far beyond the seen range (in ranges) scores ``DEFAULT_THRESHOLD``: a tenth of it,
#: rare for a usual reading (see the class doc), while the trees see no distance there.
_BEYOND = 0.1


def _anchor(seen: deque[float]) -> float:
    """The rescaled mass that scores 0.9: ``0.9``, or :data:`_LIFT` of the way from the
    99th percentile of the ``seen`` learned readings' to 1 where that is higher, so that a
    stream whose usual readings reach far into sparse regions (a Gaussian's tails) has 0.9
    mean "sparser than about all of them", not "sparser than 1 in 50 of them".

    >>> _anchor(deque([0.0] * 99 + [0.5])), round(_anchor(deque([0.9] * 100)), 3)
    (0.9, 0.94)
    """
    q = heapq.nlargest(len(seen) - min(len(seen) - 1, int(0.99 * len(seen))), seen)[-1]
    return max(_ANCHOR_MIN, q + _LIFT * (1.0 - q))


def _stretched(u: float, anchor: float) -> float:
    """``u`` mapped so that ``anchor`` goes to 0.9 and 0.5 and 1 stay (linear between).

    >>> _stretched(0.95, 0.95), _stretched(0.5, 0.95), _stretched(1.0, 0.95), _stretched(0.2, 0.95)
    (0.9, 0.5, 1.0, 0.2)
    """
    if u <= 0.5 or anchor <= _ANCHOR_MIN:
        return u
    if u <= anchor:
        return 0.5 + 0.4 * (u - 0.5) / (anchor - 0.5)
    return 0.9 + 0.1 * (u - anchor) / (1.0 - anchor)


def _beyond_score(e: float) -> float:
    """The score of a reading ``e`` ranges beyond the range seen: 0 inside it, 0.9 at
    :data:`_BEYOND`, toward 1 past it.

    >>> [round(_beyond_score(e), 3) for e in (-1.0, 0.05, 0.1, 0.2, 2.0)]
    [0.0, 0.45, 0.9, 0.95, 0.995]
    """
    if e <= 0.0:
        return 0.0
    return 0.9 * e / _BEYOND if e < _BEYOND else 1.0 - 0.1 * _BEYOND / e


class RiverHalfSpaceTrees(RiverDetector):
    """River's ``HalfSpaceTrees`` behind a ``MinMaxScaler``, as River's documentation runs it,
    with its score calibrated to Edgewise's scale.

    The peer most Python users reach for; here for comparison (``bench nab``,
    ``bench detect``), not as a recommendation.

    **Calibration.** HalfSpaceTrees scores ``1 - mass / max_mass``, where ``mass`` sums, in
    each tree, the reference window's count in every node on the reading's path weighted by
    ``2 ** depth``, and ``max_mass`` is the mass of a reading whose every node held the whole
    window down to the leaves: a bound no real stream comes near. A usual reading therefore
    scores 0.95-0.99 (``0.98`` on uniform noise: 500 of 800 readings flagged at 0.9), and a
    reading in an empty region no more than ``1 - 1 / (2 ** (height + 1) - 1)`` (0.998).
    The mass a reading can get is bounded below by the root alone (``n_trees *
    window_size``: nothing of the window near it); this class rescales the mass between
    that floor and the usual mass (its running mean over the readings learned, weight
    ``1 / window_size``)::

        u = (usual - mass) / (usual - floor)
        score = min(u, 1)              where u >= 0.5
        score = 0.5 * exp(2 * u - 1)   below (smooth at 0.5, never 0: the order of the
                                       readings more usual than usual is kept, so a
                                       threshold sweep such as NAB's sees River's ranking)

    so a usual reading scores about 0.2 (``u`` about 0). ``u`` alone made 0.9 mean "in a
    sparse region", which a Gaussian's own tails are: 2-4 % of the rows of Gaussian noise
    scored 0.9 or more (8 % on three columns), where Edgewise's other detectors flag 0-0.3 %.
    So ``u`` is stretched (linearly, 0.5 and 1 kept) to score 0.9 at an *anchor*: 0.9, or,
    where that is higher, 40 % of the way from the 99th percentile of the ``u`` of the last
    1000 readings learned to 1 (each counted at most at the anchor then in force, so a few
    anomalies do not raise it; updated every 10 readings). 0.9 thus means "sparser than
    about every usual reading of this stream" (0.2-0.5 % of the rows of Gaussian noise
    after the first window, one to three columns, 1000 to 10 000 rows; 0 of uniform ones),
    and readings keep their order within a stretch. The constants were set on synthetic
    Gaussian, AR(1) and sine noise with planted 6-sd spikes and 4-sd level shifts, not on
    any benchmark.

    The trees cannot see past the range the scaler has seen (their splits stop 15 % inside
    it), so a reading far out of range (60 in a stream of 20.0-20.6) landed in the edge leaf
    and scored as the range's largest values (0.21). A reading ``e`` ranges beyond the seen
    range (largest over its metrics) therefore scores at least ``9 e`` up to ``e = 0.1``,
    and ``1 - 0.01 / e`` past it (0.9 there, toward 1): a Gaussian reading lies that far
    beyond the range of the 250 before it about once in 700, beyond that of the 1000
    before it about once in 20 000; a 4-sd level shift's first readings mostly do.
    The first ``window_size`` readings score 0, as River's do (its trees have no reference
    window yet).

    Parameters
    ----------
    n_trees, height, window_size
        River's parameters of the same names.
    seed
        Random seed of the trees.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.random.default_rng(0).uniform(20.0, 20.6, 800)
    >>> scores = RiverHalfSpaceTrees().score_many(x)
    >>> int((scores >= 0.9).sum()), bool(np.median(scores[250:]) < 0.3)
    (0, True)
    >>> from river.anomaly import HalfSpaceTrees  # River's own score of the same stream
    >>> from river.preprocessing import MinMaxScaler
    >>> hst, raw = MinMaxScaler() | HalfSpaceTrees(seed=42), []
    >>> for v in x:
    ...     raw.append(hst.score_one({"x": float(v)})); hst.learn_one({"x": float(v)})
    >>> int((np.array(raw) >= 0.9).sum())
    550
    >>> x[600] = 60.0  # far beyond the range seen: flagged (the trees alone scored it 0.21)
    >>> float(RiverHalfSpaceTrees().score_many(x)[600]) >= 0.9
    True
    """

    _constraints: ClassVar[dict[str, Any]] = {
        "n_trees": Interval(int, 1, None),
        "height": Interval(int, 1, None),
        "window_size": Interval(int, 1, None),
        # any integral seed (np.int64 too), handed to River as an int: its random.Random
        # takes no NumPy integer
        "seed": [Interval(int, None, None), None],
    }

    def __init__(
        self, n_trees: int = 10, height: int = 8, window_size: int = 250, seed: int | None = 42
    ) -> None:
        params = {"n_trees": n_trees, "height": height, "window_size": window_size, "seed": seed}
        validate_params(self._constraints, params, self)
        self.n_trees, self.height, self.window_size, self.seed = n_trees, height, window_size, seed
        anomaly, preprocessing = _river()
        super().__init__(
            preprocessing.MinMaxScaler()
            | anomaly.HalfSpaceTrees(
                n_trees=n_trees, height=height, window_size=window_size,
                seed=None if seed is None else int(seed),
            )
        )
        self.n_ = 0  # readings learned
        self.n_usual_ = 0  # masses in usual_
        self.usual_ = 0.0  # running mean of the mass of the readings learned
        self._last: tuple[dict[str, float], float] | None = None  # (reading, mass) scored
        self.seen_u_: deque[float] = deque(maxlen=_SEEN)  # rescaled masses of the last learned
        self.anchor_ = _ANCHOR_MIN  # the u that scores DEFAULT_THRESHOLD (see the class doc)

    def __setstate__(self, state: dict[str, Any]) -> None:
        # state saved before calibration: score 0 until a window of readings is learned;
        # saved before the anchor: anchored as a fresh detector is, until it has seen more
        state = {"n_": 0, "n_usual_": 0, "usual_": 0.0, "_last": None,
                 "seen_u_": deque(maxlen=_SEEN), "anchor_": _ANCHOR_MIN, **state}
        self.__dict__.update(state)

    def _mass(self, clean: dict[str, float]) -> float:
        """River's score of ``clean`` as mass per tree, in windows: 1 (the root alone)
        up to ``2 ** (height + 1) - 1``; NaN when River's score is not finite."""
        if self._last is not None and self._last[0] == clean:
            return self._last[1]
        raw = float(self.model.score_one(clean))
        mass = (1.0 - raw) * (2 ** (self.height + 1) - 1) if math.isfinite(raw) else math.nan
        self._last = (clean, mass)
        return mass

    def learn_one(self, x: Mapping[str, float]) -> None:
        """Learn one reading (NaN values are dropped first), and its mass into the usual."""
        clean = {k: float(v) for k, v in x.items() if math.isfinite(v)}
        if not clean:
            return
        if self.n_ >= self.window_size:
            mass = self._mass(clean)
            if math.isfinite(mass):
                if self.n_usual_ > 0 and self.usual_ > 1.0:
                    # at most the anchor: a few anomalies do not raise it
                    u = (self.usual_ - mass) / (self.usual_ - 1.0)
                    self.seen_u_.append(min(u, self.anchor_))
                    if self.n_usual_ % _ANCHOR_EVERY == 0:
                        self.anchor_ = _anchor(self.seen_u_)
                self.n_usual_ += 1
                self.usual_ += max(1.0 / self.window_size, 1.0 / self.n_usual_) * (
                    mass - self.usual_)
        self.model.learn_one(clean)
        self.n_ += 1
        self._last = None

    def score_one(self, x: Mapping[str, float]) -> float:
        """The calibrated score (see the class doc); learns nothing."""
        clean = {k: float(v) for k, v in x.items() if math.isfinite(v)}
        if not clean or self.n_ < self.window_size or self.n_usual_ == 0:
            return 0.0
        mass = self._mass(clean)
        if not math.isfinite(mass):
            return 1.0
        span = self.usual_ - 1.0
        if not span > 0.0:
            return 0.0
        u = (self.usual_ - mass) / span
        return max(_order_kept(_stretched(u, self.anchor_)), self._out_of_range(clean))

    def _out_of_range(self, clean: dict[str, float]) -> float:
        """The score of how far ``clean`` lies beyond the range the scaler has seen, which
        the trees cannot tell from its edge (:func:`_beyond_score`)."""
        scaler = self.model["MinMaxScaler"]
        e = 0.0
        for k, v in clean.items():
            if k not in scaler.min or k not in scaler.max:
                continue
            lo, hi = scaler.min[k].get(), scaler.max[k].get()
            if hi > lo:
                e = max(e, (v - hi) / (hi - lo), (lo - v) / (hi - lo))
        return _beyond_score(e)

    def clone(self) -> RiverHalfSpaceTrees:
        """A fresh detector with the same parameters."""
        return type(self)(self.n_trees, self.height, self.window_size, self.seed)
