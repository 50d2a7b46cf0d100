"""Streaming anomaly detectors. Scores are in [0, 1]; high means anomalous.

Every detector implements :class:`~edgewise.detect.base.Detector`: ``learn_one``,
``score_one`` and a vectorised ``score_many`` that equals the score-then-learn loop.
"""

from __future__ import annotations

from edgewise.detect.base import DEFAULT_THRESHOLD, Detector

__all__ = ["DEFAULT_THRESHOLD", "Detector"]
