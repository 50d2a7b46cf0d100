"""Sliding-window views of one unit's history: summary features and raw sequences.

For every row ``t`` of a unit, the window is the last ``window`` rows up to and
including ``t`` (fewer at the start of a history). :func:`window_features` summarises
each sensor over it by **level** (mean of the window, and of its last ``window // 5``
rows), **trend** (least-squares slope over the window and over the whole history so
far) and **variability** (standard deviation over the window); it adds the unit's age.
:func:`window_sequences` returns the raw window, left-padded with the first row, for
sequence models. Everything is causal: row ``t`` sees nothing after ``t``.

>>> z = np.arange(10.0)[:, None]
>>> f = window_features(z, window=5)
>>> f.shape
(10, 7)
>>> f[-1].round(2).tolist()  # mean, recent mean, slope, std, history slope, last, age
[7.0, 9.0, 1.0, 1.41, 1.0, 9.0, 10.0]
>>> window_sequences(z, window=3)[0, :, 0].tolist()
[0.0, 0.0, 0.0]
"""

from __future__ import annotations

import numpy as np

__all__ = ["FEATURE_KINDS", "feature_names", "window_features", "window_sequences"]

#: Per-sensor summaries, in column order, then one ``age`` column.
FEATURE_KINDS = ("mean", "recent", "slope", "std", "hslope", "last")


def feature_names(sensors: list[str]) -> list[str]:
    """Column names of :func:`window_features` for these sensor names.

    >>> feature_names(["s2"])
    ['s2_mean', 's2_recent', 's2_slope', 's2_std', 's2_hslope', 's2_last', 'age']
    """
    return [f"{s}_{k}" for s in sensors for k in FEATURE_KINDS] + ["age"]


def _window_sums(a: np.ndarray, window: int) -> np.ndarray:
    """Sum of the last ``window`` rows up to each row (fewer at the start)."""
    c = np.cumsum(a, axis=0)
    out = c.copy()
    out[window:] = c[window:] - c[:-window]
    return out


def _slope(z: np.ndarray, window: int | None) -> np.ndarray:
    """Least-squares slope per row over the last ``window`` rows (all rows if None)."""
    n_rows = len(z)
    t = np.arange(n_rows, dtype=float)[:, None]
    w = n_rows if window is None else window
    n = np.minimum(np.arange(1, n_rows + 1), w).astype(float)[:, None]
    st = _window_sums(t, w)
    stt = _window_sums(t * t, w)
    sz = _window_sums(z, w)
    stz = _window_sums(t * z, w)
    den = n * stt - st * st
    with np.errstate(invalid="ignore", divide="ignore"):
        slope = (n * stz - st * sz) / den
    return np.where(den > 0, slope, 0.0)


def window_features(z: np.ndarray, window: int = 30) -> np.ndarray:
    """Level, trend and variability of each column of ``z`` over a trailing window.

    Parameters
    ----------
    z
        One unit's (normalised) sensor rows in time order, shape ``(n_rows, n_sensors)``.
    window
        Rows per window.

    Returns
    -------
    numpy.ndarray
        Shape ``(n_rows, 6 * n_sensors + 1)``; columns as :func:`feature_names`.
    """
    z = np.asarray(z, dtype=float)
    n_rows, n_sensors = z.shape
    n = np.minimum(np.arange(1, n_rows + 1), window).astype(float)[:, None]
    mean = _window_sums(z, window) / n
    short = max(1, window // 5)
    ns = np.minimum(np.arange(1, n_rows + 1), short).astype(float)[:, None]
    recent = _window_sums(z, short) / ns
    var = _window_sums(z * z, window) / n - mean * mean
    std = np.sqrt(np.clip(var, 0.0, None))
    slope = _slope(z, window)
    hslope = _slope(z, None)
    per_sensor = np.stack([mean, recent, slope, std, hslope, z], axis=2)  # rows, sensors, kinds
    age = np.arange(1, n_rows + 1, dtype=float)[:, None]
    return np.hstack([per_sensor.reshape(n_rows, n_sensors * len(FEATURE_KINDS)), age])


def window_sequences(z: np.ndarray, window: int = 30) -> np.ndarray:
    """The trailing window of every row, left-padded with the first row.

    Returns shape ``(n_rows, window, n_sensors)``.
    """
    z = np.asarray(z, dtype=float)
    padded = np.vstack([np.repeat(z[:1], window - 1, axis=0), z])
    idx = np.arange(len(z))[:, None] + np.arange(window)[None, :]
    return padded[idx]
