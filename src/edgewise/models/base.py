"""The protocol of a remaining-useful-life (RUL) model.

A RUL model learns from run-to-failure histories: one table of rows per unit (machine),
ordered by a time column, each history ending at the unit's failure. It then predicts,
for the *last* row of each unit in a new table, how many time steps remain, with an
interval that says how sure it is. scikit-learn conventions: parameters in ``__init__``,
learned state in attributes ending with ``_``, ``fit`` returns ``self``.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np
import pandas as pd

__all__ = ["RULEstimator"]


@runtime_checkable
class RULEstimator(Protocol):
    """What every RUL model offers: fit on histories, predict per unit with an interval."""

    def fit(self, X: pd.DataFrame, y: np.ndarray | None = None) -> RULEstimator:
        """Learn from run-to-failure histories; ``y`` (remaining steps per row) is optional."""
        ...

    def predict(self, X: pd.DataFrame) -> pd.Series:
        """Predicted remaining steps at the last row of each unit, indexed by unit."""
        ...

    def predict_interval(self, X: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(point, low, high)`` arrays, one entry per unit in sorted unit order."""
        ...
