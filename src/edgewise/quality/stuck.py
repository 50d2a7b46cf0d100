"""Stuck (flat-line) sensors: a run of identical readings longer than a live sensor shows.

>>> v = [1.0, 2.0, 3.0, 3.0, 3.0, 3.0, 3.0, 4.0]
>>> stuck_mask(v, min_run=5).astype(int).tolist()
[0, 0, 1, 1, 1, 1, 1, 0]
>>> stuck_runs(v, min_run=5)
[(2, 7)]
"""

from __future__ import annotations

import numpy as np

from edgewise.errors import QualityError

__all__ = ["stuck_mask", "stuck_runs"]


def stuck_runs(values: object, min_run: int = 10, tol: float = 0.0) -> list[tuple[int, int]]:
    """``(start, stop)`` index ranges where at least ``min_run`` values stay within ``tol``."""
    if not isinstance(min_run, int) or min_run < 2:
        raise QualityError(
            f"The 'min_run' parameter of stuck must be an int >= 2. Got {min_run!r} instead."
        )
    v = np.asarray(values, dtype=float)
    if len(v) < min_run:
        return []
    same = np.abs(np.diff(v)) <= tol
    runs, start = [], None
    for i, s in enumerate(np.r_[same, False]):
        if s and start is None:
            start = i
        elif not s and start is not None:
            if i + 1 - start >= min_run:
                runs.append((start, i + 1))
            start = None
    return runs


def stuck_mask(values: object, min_run: int = 10, tol: float = 0.0) -> np.ndarray:
    """Boolean mask of readings inside a stuck run."""
    v = np.asarray(values, dtype=float)
    mask = np.zeros(len(v), dtype=bool)
    for a, b in stuck_runs(v, min_run, tol):
        mask[a:b] = True
    return mask
