"""Use a River anomaly detector as an Edgewise detector (River is an optional dependency).

Scores are in [0, 1]; high means anomalous (River's scores are clipped to that range).
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


class RiverHalfSpaceTrees(RiverDetector):
    """River's ``HalfSpaceTrees`` behind a ``MinMaxScaler``, as River's documentation runs it.

    The peer most Python users reach for; here for comparison (``bench nab``,
    ``bench detect``), not as a recommendation.

    Parameters
    ----------
    n_trees, height, window_size
        River's parameters of the same names.
    seed
        Random seed of the trees.
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

    def clone(self) -> RiverHalfSpaceTrees:
        """A fresh detector with the same parameters."""
        return type(self)(self.n_trees, self.height, self.window_size, self.seed)
