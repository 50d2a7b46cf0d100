"""Streaming anomaly detectors. Scores are in [0, 1]; high means anomalous.

Every detector implements :class:`~edgewise.detect.base.Detector`: ``learn_one``,
``score_one`` and a vectorised ``score_many`` that equals the score-then-learn loop.
One threshold, :data:`DEFAULT_THRESHOLD`, means "anomaly" for every detector.

Detectors by name (for configuration, the CLI and the gateway):

* ``"context-likelihood"`` (the default, :data:`DEFAULT_DETECTOR`): one metric;
  sequence novelty + prediction error, anomaly likelihood, repeat suppression.
* ``"context-art"``: the default plus an ART member (adaptive resonance on windowed
  means, as ARTime); higher on NAB but inside its noise, ~2.5x slower, no C export.
* ``"mahalanobis"`` (:data:`DEFAULT_MULTIVARIATE`): all metrics of a device together,
  with per-metric attribution.
* ``"drift-residual"``: all metrics of a device, learning normal from a known-normal
  training span (``--train-rows``) and then tracking slow drift but never faults; the
  best on pump/valve testbeds (``benchmarks/results/multivariate.md``).
* ``"per-metric-residual"``: ``drift-residual`` with one alarm level per metric (each
  metric judged against its own noise over the training span); opt-in: better on the
  dev files, about equal on held-out ones (``multivariate.md``, look #5).
* ``"long-run-residual"``: ``drift-residual`` with each metric's deviation widened to its
  long-run (autocorrelation-consistent) spread, so slow metrics such as temperatures do
  not alarm on their normal wandering; opt-in: better on dev and on both held-out figures,
  short of the margin its adoption rule asked (``multivariate.md``, look #7).
* ``"state-aware"`` (the gateway's per-metric default): ``context-likelihood``, except
  that a stream showing only two values (a door contact, an on/off flag) is scored by
  :class:`TwoState` on how long each state lasts and how often it switches.
* ``"ewzscore"``: exponentially weighted z-score, the cheapest baseline.
* ``"river-hst"``: River's HalfSpaceTrees through :class:`RiverDetector` (needs ``river``),
  the usual Python peer, kept for comparison.

>>> print(*sorted(DETECTORS))
context-art context-likelihood drift-residual ewzscore long-run-residual mahalanobis
per-metric-residual river-hst state-aware
>>> type(get_detector("context-likelihood", warmup=50)).__name__
'ContextLikelihood'
"""

from __future__ import annotations

from typing import Any

from edgewise.detect.base import DEFAULT_THRESHOLD, Detector
from edgewise.detect.context_likelihood import ContextART, ContextLikelihood
from edgewise.detect.drift_residual import DriftResidual, LongRunResidual, PerMetricResidual
from edgewise.detect.mahalanobis import Mahalanobis
from edgewise.detect.river_adapter import RiverDetector, RiverHalfSpaceTrees
from edgewise.detect.threshold import Threshold
from edgewise.detect.two_state import StateAware, TwoState
from edgewise.detect.zscore import EWZScore
from edgewise.errors import InvalidParameterError

__all__ = [
    "DEFAULT_DETECTOR",
    "DEFAULT_MULTIVARIATE",
    "DEFAULT_THRESHOLD",
    "DETECTORS",
    "LEVEL_DETECTORS",
    "ContextART",
    "ContextLikelihood",
    "Detector",
    "DriftResidual",
    "EWZScore",
    "LongRunResidual",
    "Mahalanobis",
    "PerMetricResidual",
    "RiverDetector",
    "RiverHalfSpaceTrees",
    "StateAware",
    "Threshold",
    "TwoState",
    "default_detector",
    "default_multivariate",
    "get_detector",
]

#: Detector classes by the name configuration and the CLI use.
DETECTORS: dict[str, type[Detector]] = {
    "context-art": ContextART,
    "context-likelihood": ContextLikelihood,
    "drift-residual": DriftResidual,
    "ewzscore": EWZScore,
    "long-run-residual": LongRunResidual,
    "mahalanobis": Mahalanobis,
    "per-metric-residual": PerMetricResidual,
    "river-hst": RiverHalfSpaceTrees,
    "state-aware": StateAware,
}
#: The default for one metric.
DEFAULT_DETECTOR = "context-likelihood"
#: One-metric level detectors: what the gateway may score each metric with (``--detector``).
LEVEL_DETECTORS = ("context-art", "context-likelihood", "ewzscore", "river-hst")
#: The default for several metrics of one device.
DEFAULT_MULTIVARIATE = "mahalanobis"


def get_detector(name: str, **params: Any) -> Detector:
    """Build the detector registered as ``name`` with ``params``.

    >>> get_detector("isolation")
    Traceback (most recent call last):
    ...
    edgewise.errors.InvalidParameterError: Unknown detector 'isolation'. Choose one of: context-art, context-likelihood, drift-residual, ewzscore, long-run-residual, mahalanobis, per-metric-residual, river-hst, state-aware.
    """  # noqa: E501
    cls = DETECTORS.get(name)
    if cls is None:
        raise InvalidParameterError(
            f"Unknown detector {name!r}. Choose one of: {', '.join(sorted(DETECTORS))}."
        )
    return cls(**params)


def default_detector() -> Detector:
    """A fresh instance of the default one-metric detector (:data:`DEFAULT_DETECTOR`).

    >>> type(default_detector()).__name__
    'ContextLikelihood'
    """
    return get_detector(DEFAULT_DETECTOR)


def default_multivariate() -> Detector:
    """A fresh instance of the default per-device detector (:data:`DEFAULT_MULTIVARIATE`).

    >>> type(default_multivariate()).__name__
    'Mahalanobis'
    """
    return get_detector(DEFAULT_MULTIVARIATE)
