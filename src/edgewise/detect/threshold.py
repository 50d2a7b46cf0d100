"""Turn scores into decisions, and keep flagged readings out of what a detector learns."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from edgewise.detect.base import DEFAULT_THRESHOLD, Detector
from edgewise.params import Interval, validate_params

__all__ = ["Threshold"]


class Threshold(Detector):
    """Flag scores at or above ``threshold``; by default don't learn from flagged readings.

    A wrapper (River's ``AnomalyFilter``), so every detector gets the behaviour without a
    flag of its own. Scores pass through unchanged; :meth:`is_anomaly` gives the decision.

    Parameters
    ----------
    detector
        The detector whose scores are thresholded.
    threshold
        Scores at or above it are anomalies; in (0, 1].
    protect
        When true, readings scored as anomalies are not learned, so a long fault does not
        become the new normal. It suits detectors that model a distribution (``EWZScore``,
        ``Mahalanobis``), not ``ContextLikelihood``, which suppresses repeats itself and
        flags what is new: a reading it flags and never learns stays new, so it alerts for
        good (one at a time over NAB's ``machine_temperature_system_failure``: 21,593 of
        22,695 readings flagged with protection, 12 without; a cumulative meter scored by
        its increments likewise, from the first unseen hour of its daily cycle).

    Examples
    --------
    >>> from edgewise.detect.zscore import EWZScore
    >>> det = Threshold(EWZScore())
    >>> for v in [20.0, 20.2, 19.9] * 20:
    ...     det.learn_one({"temp_c": v})
    >>> det.is_anomaly({"temp_c": 35.0}), det.is_anomaly({"temp_c": 20.1})
    (True, False)
    >>> n = det.detector.n_
    >>> det.learn_one({"temp_c": 35.0}); det.detector.n_ == n   # not learned
    True
    """

    _constraints: ClassVar[dict[str, Any]] = {
        "detector": Detector,
        # above 0: every score is at least 0, so at 0 every reading was an anomaly (and,
        # protected, none was ever learned)
        "threshold": Interval(float, 0.0, 1.0, closed="right"),
        "protect": bool,
    }

    def __init__(
        self, detector: Detector, threshold: float = DEFAULT_THRESHOLD, protect: bool = True
    ) -> None:
        if isinstance(protect, np.bool_):  # a flag read from an array: NumPy's bool is one
            protect = bool(protect)
        validate_params(
            self._constraints,
            {"detector": detector, "threshold": threshold, "protect": protect},
            self,
        )
        self.detector = detector
        self.threshold = threshold
        self.protect = protect

    @classmethod
    def _unit_test_params(cls) -> list[dict[str, Any]]:
        from edgewise.detect.zscore import EWZScore

        return [{"detector": EWZScore(warmup=5)}]

    def score_one(self, x: Mapping[str, float]) -> float:
        """The wrapped detector's score."""
        return self.detector.score_one(x)

    def is_anomaly(self, x: Mapping[str, float]) -> bool:
        """Whether ``x`` scores at or above the threshold (learns nothing)."""
        return self.detector.score_one(x) >= self.threshold

    def learn_one(self, x: Mapping[str, float]) -> None:
        """Learn ``x`` unless protection is on and it scores as an anomaly."""
        if not (self.protect and self.detector.score_one(x) >= self.threshold):
            self.detector.learn_one(x)

    def explain_one(self, x: Mapping[str, float]) -> dict[str, float]:
        """The wrapped detector's attribution."""
        return self.detector.explain_one(x)

    def clone(self) -> Threshold:
        """A fresh wrapper around a fresh clone of the wrapped detector."""
        return Threshold(self.detector.clone(), self.threshold, self.protect)
