"""What every cleaning step returns, and the reasons a reading can be removed or flagged.

A cleaner never drops a reading silently: ``kept + sum(removed.values()) == n_input``.

>>> r = CleanResult(np.array([1, 2]), np.array([1.0, 2.0]), {"duplicate": 1}, n_input=3)
>>> r.balanced()
True
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from edgewise.errors import QualityError

__all__ = ["FLAG_REASONS", "REMOVE_REASONS", "CleanResult", "as_series"]

#: Why a reading is removed.
REMOVE_REASONS = ("invalid", "duplicate", "conflict", "out_of_order", "out_of_range", "rate",
                  "spike")
#: Why a reading is kept but flagged.
FLAG_REASONS = ("spike", "stuck")


@dataclass
class CleanResult:
    """Kept times and values, and how many readings were removed for each reason."""

    ts: np.ndarray
    values: np.ndarray
    removed: dict[str, int] = field(default_factory=dict)
    n_input: int = 0
    flagged: dict[str, int] = field(default_factory=dict)

    def balanced(self) -> bool:
        """Whether kept plus removed-by-reason equals the input count."""
        return len(self.values) + sum(self.removed.values()) == self.n_input


def as_series(ts: object, values: object, name: str = "series") -> tuple[np.ndarray, np.ndarray]:
    """``ts`` as int64 nanoseconds and ``values`` as float64, checked to be the same length.

    >>> as_series([1, 2], [3, 4])
    (array([1, 2]), array([3., 4.]))
    """
    try:
        t = np.asarray(ts, dtype=np.int64).reshape(-1)
        v = np.asarray(values, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError, OverflowError) as exc:
        raise QualityError(
            f"The {name} must be integer nanosecond times and numeric values. Got: {exc}."
        ) from None
    if len(t) != len(v):
        raise QualityError(
            f"The {name} has {len(t)} times but {len(v)} values; they must be the same length."
        )
    return t, v
