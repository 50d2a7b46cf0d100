"""Sliding-window views of one unit's history: summary features and raw sequences.

For every row ``t`` of a unit, the window is the last ``window`` rows up to and
including ``t`` (fewer at the start of a history). :func:`window_features` summarises
each sensor over it by **level** (mean of the window, and of its last ``window // 5``
rows), **trend** (least-squares slope over the window and over the whole history so
far) and **variability** (standard deviation over the window); it adds the unit's age.
:func:`window_sequences` returns the raw window, left-padded with the first row, for
sequence models. Everything is causal: row ``t`` sees nothing after ``t``.

Features are exact where it matters to a tree model exported to float32 (ONNX, C): window
summaries are sums over the window's own rows, added oldest first (not differences of
running sums, which carry the rounding of every earlier row), so equal windows give
bit-identical values wherever they sit; and every feature is rounded to float32 precision,
so values that are equal but for their last bits (a window's values in another order) are
equal, and a threshold learned in Python separates exactly what the float32 model does.

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

from edgewise.errors import InvalidParameterError

__all__ = ["FEATURE_KINDS", "feature_names", "window_features", "window_sequences"]

#: Per-sensor summaries, in column order, then one ``age`` column.
FEATURE_KINDS = ("mean", "recent", "slope", "std", "hslope", "last")


def feature_names(sensors: list[str]) -> list[str]:
    """Column names of :func:`window_features` for these sensor names.

    >>> feature_names(["s2"])
    ['s2_mean', 's2_recent', 's2_slope', 's2_std', 's2_hslope', 's2_last', 'age']
    """
    return [f"{s}_{k}" for s in sensors for k in FEATURE_KINDS] + ["age"]


def _lagged_sums(a: np.ndarray, window: int, slope: bool = False) -> np.ndarray:
    """``sum over lags k < window of weight * a[t - k]`` for every row ``t`` (lags that
    reach before row 0 left out), added oldest first, one lag at a time. The weights are 1;
    with ``slope`` they are :func:`_slope_weights` of the row's window (``t + 1`` rows
    early on, then ``window``), so the sum is the least-squares slope over the window.

    Each row's sum is the same sequence of float operations wherever its window sits, so
    equal windows give bit-identical results. A difference of running sums
    (``cumsum[t] - cumsum[t - window]``) does not: it carries the rounding of everything
    before the window, and tree models then learn thresholds between values that are
    equal but for the last bit, which float32 inputs (ONNX, C) cannot separate.

    Memory is that of ``a`` (a few rows' worth more), whatever the window: the weights of
    one lag are made when it is added, never as a ``window x window`` table (which took
    75 GiB for a window of 100,000).
    """
    n_rows, full = len(a), window - 1
    out = np.zeros_like(a)
    for k in range(min(window, n_rows) - 1, -1, -1):
        if not slope:
            out[k:] += a[: n_rows - k]
            continue
        stop = min(full, n_rows)  # rows k .. stop - 1 have shorter windows of their own
        if k < stop:
            out[k:stop] += _slope_weights(np.arange(k + 1, stop + 1), k)[:, None] * a[: stop - k]
        if n_rows > full:
            out[full:] += _slope_weights(np.array([window]), k)[0] * a[full - k: n_rows - k]
    return out


def _slope_weights(m: np.ndarray, k: int) -> np.ndarray:
    """Weight of lag ``k`` in the least-squares slope over windows of ``m`` rows (each
    ``> k``): the lag's centred time in the window over the window's sum of squared centred
    times (``m (m^2 - 1) / 12``, exact in float64 for windows below about 200,000 rows, as
    is every centred time); 0 for a one-row window.

    >>> _slope_weights(np.array([1, 2, 3]), 0).tolist()  # the newest row of 1, 2, 3 rows
    [0.0, 1.0, 0.5]
    """
    m = np.asarray(m, dtype=float)
    centred = (m - 1.0 - k) - (m - 1.0) / 2.0
    squares = m * (m * m - 1.0) / 12.0
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(m > 1, centred / np.where(m > 1, squares, 1.0), 0.0)


def _history_slope(z: np.ndarray) -> np.ndarray:
    """Least-squares slope per row over every row so far (running sums from row 0)."""
    n_rows = len(z)
    t = np.arange(n_rows, dtype=float)[:, None]
    n = np.arange(1, n_rows + 1, dtype=float)[:, None]
    st, stt = np.cumsum(t, axis=0), np.cumsum(t * t, axis=0)
    sz, stz = np.cumsum(z, axis=0), np.cumsum(t * z, axis=0)
    den = n * stt - st * st
    with np.errstate(invalid="ignore", divide="ignore"):
        slope = (n * stz - st * sz) / den
    return np.where(den > 0, slope, 0.0)


def _checked(z: np.ndarray, window: int, who: str) -> np.ndarray:
    """``z`` as a 2-D float array, with ``window`` an int of at least 1; else an
    :class:`~edgewise.errors.InvalidParameterError` naming the value and what would do
    (a window of 0 gave NaN features, a negative one garbage, and 1-D rows "not enough
    values to unpack").

    >>> _checked(np.ones((3, 2)), 2, "window_features").shape
    (3, 2)
    >>> _checked(np.ones((3, 2)), 0, "window_features")
    Traceback (most recent call last):
    ...
    edgewise.errors.InvalidParameterError: window_features needs window as an int of at least 1 (rows per window). Got 0.
    >>> _checked(np.ones(3), 2, "window_sequences")
    Traceback (most recent call last):
    ...
    edgewise.errors.InvalidParameterError: window_sequences needs rows as a 2-D array (n_rows, n_sensors). Got a 1-D array of shape (3,); one sensor's rows are z[:, None].
    """  # noqa: E501
    if (isinstance(window, bool) or not isinstance(window, int | np.integer)
            or window < 1):
        raise InvalidParameterError(
            f"{who} needs window as an int of at least 1 (rows per window). Got {window!r}.",
            field="window", value=window)
    arr = np.asarray(z, dtype=float)
    if arr.ndim != 2:
        hint = "; one sensor's rows are z[:, None]" if arr.ndim == 1 else ""
        raise InvalidParameterError(
            f"{who} needs rows as a 2-D array (n_rows, n_sensors). Got a {arr.ndim}-D array "
            f"of shape {arr.shape}{hint}.", field="z", value=arr.shape)
    return arr


def window_features(z: np.ndarray, window: int = 30) -> np.ndarray:
    """Level, trend and variability of each column of ``z`` over a trailing window.

    Parameters
    ----------
    z
        One unit's (normalised) sensor rows in time order, shape ``(n_rows, n_sensors)``.
    window
        Rows per window: an int of at least 1.

    Returns
    -------
    numpy.ndarray
        Shape ``(n_rows, 6 * n_sensors + 1)``; columns as :func:`feature_names`. Values
        are rounded to float32 precision (the dtype stays float64), the precision of an
        exported model's inputs.

    Raises
    ------
    InvalidParameterError
        When ``window`` is not an int of at least 1, or ``z`` is not 2-D.
    """
    z = _checked(z, window, "window_features")
    n_rows, n_sensors = z.shape
    n = np.minimum(np.arange(1, n_rows + 1), window).astype(float)[:, None]
    mean = _lagged_sums(z, window) / n
    short = max(1, window // 5)
    ns = np.minimum(np.arange(1, n_rows + 1), short).astype(float)[:, None]
    recent = _lagged_sums(z, short) / ns
    sq = np.zeros_like(z)  # squared deviations from the window's mean, oldest first
    for k in range(min(window, n_rows) - 1, -1, -1):
        sq[k:] += (z[: n_rows - k] - mean[k:]) ** 2
    std = np.sqrt(sq / n)
    slope = _lagged_sums(z, window, slope=True)
    hslope = _history_slope(z)
    per_sensor = np.stack([mean, recent, slope, std, hslope, z], axis=2)  # rows, sensors, kinds
    age = np.arange(1, n_rows + 1, dtype=float)[:, None]
    out = np.hstack([per_sensor.reshape(n_rows, n_sensors * len(FEATURE_KINDS)), age])
    # float32 precision: a model learns thresholds between values an exported float32 model
    # can tell apart (and values equal but for their last bits become equal)
    return out.astype(np.float32).astype(np.float64)


def window_sequences(z: np.ndarray, window: int = 30) -> np.ndarray:
    """The trailing window of every row, left-padded with the first row.

    Returns shape ``(n_rows, window, n_sensors)``. ``window`` must be an int of at least
    1 and ``z`` 2-D (:class:`~edgewise.errors.InvalidParameterError` otherwise).

    >>> window_sequences(np.arange(3.0)[:, None], window=2)[:, :, 0].tolist()
    [[0.0, 0.0], [0.0, 1.0], [1.0, 2.0]]
    """
    z = _checked(z, window, "window_sequences")
    padded = np.vstack([np.repeat(z[:1], window - 1, axis=0), z])
    idx = np.arange(len(z))[:, None] + np.arange(window)[None, :]
    return padded[idx]
