"""Labels from people, and learning from them cheaply.

* :mod:`~edgewise.label.store`: versioned, audit-logged labels on windows of a device.
* :mod:`~edgewise.label.windows`: history cut into scored, described windows.
* :mod:`~edgewise.label.strategies`: which windows to ask a person about next.
* :mod:`~edgewise.label.feedback`: false alarms teach detectors; confirmed anomalies stay out.
* :mod:`~edgewise.label.semi_supervised`: fault types from few labels + unlabelled windows.
* :mod:`~edgewise.label.workflow`: suggest / train-with-labels for one device.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# Imported on first use (PEP 562): the gateway's HTTP routes import edgewise.label.store,
# and importing this package eagerly pulled in scikit-learn (feedback, semi_supervised),
# about 1 s of every 'edgewise serve' and 'demo' start.
_HOME = {
    "FeedbackDetector": "feedback", "WindowFeedbackModel": "feedback",
    "FaultClassifier": "semi_supervised",
    "Label": "store", "LabelStore": "store",
    "DefaultMix": "strategies", "Disagreement": "strategies", "Diversity": "strategies",
    "Pool": "strategies", "RandomSampling": "strategies", "TopScore": "strategies",
    "Uncertainty": "strategies",
    "WindowSet": "windows", "windows_from_series": "windows",
}

if TYPE_CHECKING:
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


def __getattr__(name: str) -> Any:
    """``edgewise.label.LabelStore`` and the rest, imported when first asked for.

    >>> import edgewise.label as label
    >>> label.LabelStore.__name__, label.WindowSet.__module__
    ('LabelStore', 'edgewise.label.windows')
    """
    if name in _HOME:
        value = getattr(importlib.import_module(f"edgewise.label.{_HOME[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


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
