"""Labels from people, and learning from them cheaply.

* :mod:`~edgewise.label.store`: versioned, audit-logged labels on windows of a device.
* :mod:`~edgewise.label.windows`: history cut into scored, described windows.
* :mod:`~edgewise.label.strategies`: which windows to ask a person about next.
* :mod:`~edgewise.label.feedback`: false alarms teach detectors; confirmed anomalies stay out.
* :mod:`~edgewise.label.semi_supervised`: fault types from few labels + unlabelled windows.
* :mod:`~edgewise.label.workflow`: suggest / train-with-labels for one device.
"""

from __future__ import annotations

from edgewise.label.feedback import FeedbackDetector, WindowFeedbackModel
from edgewise.label.semi_supervised import FaultClassifier
from edgewise.label.store import Label, LabelStore
from edgewise.label.strategies import (
    DefaultMix,
    Disagreement,
    Diversity,
    Pool,
    RandomSampling,
    TopScore,
    Uncertainty,
)
from edgewise.label.windows import WindowSet, windows_from_series

__all__ = [
    "DefaultMix",
    "Disagreement",
    "Diversity",
    "FaultClassifier",
    "FeedbackDetector",
    "Label",
    "LabelStore",
    "Pool",
    "RandomSampling",
    "TopScore",
    "Uncertainty",
    "WindowFeedbackModel",
    "WindowSet",
    "windows_from_series",
]
