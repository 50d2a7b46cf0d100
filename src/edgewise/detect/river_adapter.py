"""Use a River anomaly detector as an Edgewise detector (River is an optional dependency).

Scores are in [0, 1]; high means anomalous. :class:`RiverDetector` passes a River model's
own score through (clipped to that range), uncalibrated: River's scores mean different
things per model. :class:`RiverHalfSpaceTrees` calibrates HalfSpaceTrees' score, so that
0.9 (``DEFAULT_THRESHOLD``) means what it means for every Edgewise detector.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar

from edgewise.detect.base import Detector
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

    so a usual reading scores about 0.2 (``u`` about 0), and 0.9 or more means the reading's
    path held at most a tenth of the usual mass above the floor: (almost) nothing of the
    reference window was near it in (almost) every tree. No data set fixed any constant. The
    first
    ``window_size`` readings score 0, as River's do (its trees have no reference window
    yet).

    HalfSpaceTrees has a blind spot this does not mend: the scaler maps the range seen so
    far to [0, 1] and the trees stop 15% beyond it, so a reading far out of range (60 in a
    stream of 20.0-20.6) lands in the edge leaf with the range's largest values and scores
    as one of them (0.21 there; 0.98 before calibration, as did every reading).

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
    """

    _constraints: ClassVar[dict[str, Any]] = {
        "n_trees": Interval(int, 1, None),
        "height": Interval(int, 1, None),
        "window_size": Interval(int, 1, None),
        "seed": [int, None],
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
                n_trees=n_trees, height=height, window_size=window_size, seed=seed
            )
        )
        self.n_ = 0  # readings learned
        self.n_usual_ = 0  # masses in usual_
        self.usual_ = 0.0  # running mean of the mass of the readings learned
        self._last: tuple[dict[str, float], float] | None = None  # (reading, mass) scored

    def __setstate__(self, state: dict[str, Any]) -> None:
        # state saved before calibration: score 0 until a window of readings is learned
        state = {"n_": 0, "n_usual_": 0, "usual_": 0.0, "_last": None, **state}
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
        return _order_kept((self.usual_ - mass) / span)

    def clone(self) -> RiverHalfSpaceTrees:
        """A fresh detector with the same parameters."""
        return type(self)(self.n_trees, self.height, self.window_size, self.seed)
