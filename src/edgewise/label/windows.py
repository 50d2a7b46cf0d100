"""Cut a device's history into windows, score them, and describe each by scale-free features.

A *window* is what a person labels: ``[start_ns, end_ns)`` of one device. Query
strategies and the label-aware models all work on a :class:`WindowSet`: one row per
window with

* ``scores``: for each detector of an ensemble, the highest calibrated score ([0, 1])
  it gave inside the window (detectors run streaming over the whole history, score then
  learn, as they would live);
* ``features``: scale-free descriptors, so windows of different devices and units are
  comparable: per channel the robust z of the window's level, the log ratio of its
  spread and of its step size to the device's typical ones, and its largest robust
  |z|; then the detector scores.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> x = rng.normal(20, 0.5, 1000); x[700:705] += 8
>>> ws = windows_from_series(x, np.arange(1000) * 60 * 10**9, "pump-1", length=50)
>>> len(ws), int(np.argmax(ws.scores[:, 0]))
(20, 14)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from edgewise.detect.base import Detector, readings
from edgewise.detect.zscore import EWZScore
from edgewise.errors import InvalidParameterError
from edgewise.label.store import is_anomalous

__all__ = ["WindowSet", "default_ensemble", "windows_from_series"]


class _Diff(Detector):
    """Feed a detector the step ``x[t] - x[t-1]`` instead of the level (spots jumps)."""

    def __init__(self, detector: Detector | None = None) -> None:
        self.detector = detector if detector is not None else EWZScore()
        self._last: dict[str, float] = {}

    def _step(self, x: dict[str, float] | object) -> dict[str, float]:
        assert isinstance(x, dict)
        return {k: v - self._last[k] for k, v in x.items() if k in self._last}

    def learn_one(self, x):  # type: ignore[no-untyped-def]
        self.detector.learn_one(self._step(x))
        self._last = dict(x)

    def score_one(self, x):  # type: ignore[no-untyped-def]
        return self.detector.score_one(self._step(x))

    def score_many(self, X: np.ndarray, columns: Sequence[str] | None = None) -> np.ndarray:
        """What the score-then-learn loop gives, the steps taken at once and handed to an
        :class:`EWZScore`'s compiled ``score_many`` for one metric (the loop, a dict a
        reading, made :func:`windows_from_series` 2.5x slower); the loop otherwise.

        A step is ``x[t] - x[t-1]`` where both readings are finite, else missing, as
        :meth:`_step` makes it (a missing reading is no key, and leaves nothing to step
        from); the first one steps from the last reading learned before.
        """
        X, names = readings(X, columns)
        if type(self.detector) is not EWZScore or X.shape[1] != 1:
            return super().score_many(X, names)
        name = names[0]
        col = np.where(np.isfinite(X[:, 0]), X[:, 0], np.nan)
        prev = np.empty_like(col)
        prev[:1] = self._last.get(name, np.nan)
        prev[1:] = col[:-1]
        with np.errstate(over="ignore", invalid="ignore"):
            steps = col - prev  # NaN where either is missing; inf (missing to EWZScore) kept
        out = self.detector.score_many(steps[:, None])
        if len(col):
            self._last = {name: float(col[-1])} if np.isfinite(col[-1]) else {}
        return out


def default_ensemble() -> list[Callable[[], Detector]]:
    """Factories of the detectors whose window scores describe a window.

    Three views of a stream: slow level, fast level, and step size. The first is the
    *primary* detector (its score alone is the label-free baseline).

    >>> [type(f()).__name__ for f in default_ensemble()]
    ['EWZScore', 'EWZScore', '_Diff']
    """
    return [lambda: EWZScore(alpha=0.02), lambda: EWZScore(alpha=0.2, warmup=10),
            lambda: _Diff(EWZScore(alpha=0.02))]


@dataclass
class WindowSet:
    """Windows of one or more devices, with detector scores and features per window."""

    device: np.ndarray  # (n,) str
    start_ns: np.ndarray  # (n,) int64
    end_ns: np.ndarray  # (n,) int64
    scores: np.ndarray  # (n, m) max detector score per window, detector 0 primary
    features: np.ndarray  # (n, f)
    feature_names: list[str]

    def __len__(self) -> int:
        return len(self.start_ns)

    @staticmethod
    def concat(parts: Sequence[WindowSet]) -> WindowSet:
        """Stack window sets with the same features (e.g. the devices of a fleet)."""
        if not parts:
            raise InvalidParameterError("WindowSet.concat needs at least one WindowSet.")
        return WindowSet(
            np.concatenate([p.device for p in parts]),
            np.concatenate([p.start_ns for p in parts]),
            np.concatenate([p.end_ns for p in parts]),
            np.vstack([p.scores for p in parts]),
            np.vstack([p.features for p in parts]),
            list(parts[0].feature_names),
        )

    def subset(self, idx: np.ndarray) -> WindowSet:
        """The windows at ``idx`` (indices or a boolean mask)."""
        return WindowSet(self.device[idx], self.start_ns[idx], self.end_ns[idx],
                         self.scores[idx], self.features[idx], list(self.feature_names))


#: the largest scaled reading a feature uses: its square (1e200) and a window's sum of them
#: stay finite
_Z_MAX = 1e100


def _robust_scale(a: np.ndarray) -> tuple[float, float]:
    a = a[np.isfinite(a)]
    if len(a) == 0:
        return 0.0, 1.0
    med = float(np.median(a))
    mad = float(np.median(np.abs(a - med))) * 1.4826
    top = float(np.max(np.abs(a)))
    # std of the readings over their largest, scaled back: finite for readings up to 1e308
    # (np.std squares them, inf beyond 1e154)
    sd = float(np.std(a / top)) * top if top > 0 else 0.0
    # floors relative to the level, none absolute: a metric read in nA is scaled as in A
    scale = mad if mad > 1e-9 * abs(med) else sd
    return med, max(scale, 1e-9 * abs(med), 1e-300)


def _in_magnitude_units(X: np.ndarray) -> np.ndarray:
    """The readings ``X`` with each metric (column) in units of its magnitude: divided by
    the power of two at or above its largest finite |reading|, so they lie within [-1, 1].

    Windows are scored and described by sums, squares and differences of readings (the
    detectors' running mean and variance, the median of two middle readings, steps): a
    metric reaching +-1e308 (a float's "no value" sentinel) overflowed them, with numpy's
    "overflow encountered" warning, and every window of the label queue scored 0.0 (and
    one near 1e-301 sank below the detectors' absolute floor, to the same effect). Scores
    and features are the same in any units, and dividing by a power of two is exact, so a
    metric's windows rank as those of the same readings scaled down (or up) would. NaN and
    +-inf stay as they are (missing; out of range); a metric with no finite reading other
    than 0 is left as it is.

    >>> _in_magnitude_units(np.array([[1e308, 3.0], [-1e308, np.inf], [np.nan, -5.0]])
    ...                     ).round(3).tolist()
    [[0.556, 0.375], [-0.556, inf], [nan, -0.625]]
    """
    X = np.asarray(X, dtype=float)
    shaped = X.reshape(len(X), -1)
    finite = np.where(np.isfinite(shaped), np.abs(shaped), 0.0)
    top = finite.max(axis=0) if len(shaped) else np.zeros(shaped.shape[1])
    _, exp = np.frexp(top)  # top = m * 2**exp, 0.5 <= m < 1 (exp 0 for a metric at 0)
    return np.ldexp(shaped, -exp).reshape(X.shape)


def windows_from_series(
    values: np.ndarray,
    ts_ns: np.ndarray,
    device_id: str,
    *,
    length: int,
    ensemble: Sequence[Callable[[], Detector]] | None = None,
) -> WindowSet:
    """Cut one device's history into consecutive windows of ``length`` readings.

    Parameters
    ----------
    values
        ``(T,)`` or ``(T, d)`` readings in time order (NaN = missing).
    ts_ns
        ``(T,)`` UTC nanoseconds of each reading.
    device_id
        The device, repeated on every window.
    length
        Readings per window; the last, shorter window is kept if at least half full.
        Each window ends where the next begins; the last ends 1 ns after the last
        reading (it holds that reading, and no time not yet recorded).
    ensemble
        Detector factories (default :func:`default_ensemble`); each runs once per channel
        and a window's score is the highest of any channel at any reading in it.
    """
    if isinstance(length, bool) or not isinstance(length, int) or length < 2:
        raise InvalidParameterError(
            f"The 'length' parameter of windows_from_series must be an int in the range "
            f"[2, inf). Got {length!r} instead."
        )
    X = np.asarray(values, dtype=float)
    if X.ndim == 1:
        X = X[:, None]
    ts = np.asarray(ts_ns, dtype=np.int64)
    if len(ts) != len(X):
        raise InvalidParameterError(
            f"values and ts_ns must have the same length. Got {len(X)} and {len(ts)} instead."
        )
    T, d = X.shape
    if T == 0:  # the last window's end is its last reading's: none is no window at all
        raise InvalidParameterError(
            f"Device {device_id!r} has no readings to cut into windows (values and ts_ns "
            "are empty); give its history of at least one reading.", field="values",
            value=0)
    X = _in_magnitude_units(X)  # sums and squares of readings near 1e308 overflowed
    factories = list(ensemble) if ensemble is not None else default_ensemble()
    point = np.zeros((T, len(factories)))
    for j, make in enumerate(factories):
        for c in range(d):
            point[:, j] = np.maximum(point[:, j], make().score_many(X[:, [c]]))
    bounds = list(range(0, T, length))
    # the last, shorter window is kept if at least half full: 2 * rest >= length (rest <
    # length // 2 kept 1 reading of 3, a third, as a window of its own)
    if bounds and 2 * (T - bounds[-1]) < length and len(bounds) > 1:
        bounds.pop()
    ends = [*bounds[1:], T]
    n = len(bounds)
    feats: list[np.ndarray] = []
    names: list[str] = []
    for c in range(d):
        col = X[:, c]
        med, sd = _robust_scale(col)
        with np.errstate(over="ignore", invalid="ignore"):
            steps = np.diff(col, prepend=col[0])  # inf between -1e308 and 1e308: left out
        _, ssd = _robust_scale(steps)
        # in units of the metric's own scale, clipped where squaring could overflow: a
        # reading of 1e154 (or a step between -1e308 and 1e308) gives large features, not inf
        with np.errstate(over="ignore", invalid="ignore"):
            z = np.clip((col - med) / sd, -_Z_MAX, _Z_MAX)
            zs = np.clip(steps / ssd, -_Z_MAX, _Z_MAX)
        lvl, spr, stp, mx = (np.zeros(n) for _ in range(4))
        for i, (a, b) in enumerate(zip(bounds, ends, strict=True)):
            w, zw, sw = col[a:b], z[a:b], zs[a:b]
            ok = np.isfinite(w)
            if not ok.any():
                continue
            lvl[i] = float(np.mean(zw[ok]))
            spr[i] = float(np.log(np.std(zw[ok]) + 1e-3))
            sw = sw[np.isfinite(sw)]
            stp[i] = float(np.log(np.std(sw) + 1e-3)) if len(sw) > 1 else 0.0
            mx[i] = float(np.max(np.abs(zw[ok])))
        feats += [np.clip(lvl, -20, 20), spr, stp, np.log1p(mx)]
        names += [f"c{c}_level", f"c{c}_spread", f"c{c}_step", f"c{c}_maxabs"]
    wscore = np.array([point[a:b].max(axis=0) for a, b in zip(bounds, ends, strict=True)])
    wscore = wscore.reshape(n, len(factories))
    feats += [wscore[:, j] for j in range(wscore.shape[1])]
    names += [f"score{j}" for j in range(wscore.shape[1])]
    # the last window ends just after the last reading: one reading-interval later would
    # end it in time not yet recorded (an hour ahead on hourly readings), and the label
    # store refuses a label ending more than EDGEWISE_MAX_FUTURE_S after now
    last = int(ts[-1]) + 1
    end_ns = np.array([ts[b] if b < T else last for b in ends], dtype=np.int64)
    empty = np.flatnonzero(end_ns <= ts[bounds])
    if len(empty):  # a clock set back an hour is fine (NAB has some); a window of no time is not
        i = int(empty[0])
        a, b = bounds[i], ends[i]
        if int(end_ns[i]) == int(ts[a]) and (ts[a:b] == ts[a]).all():
            raise InvalidParameterError(
                f"A window of the history would have no duration: readings {a + 1} to "
                f"{b} (and the next) all have ts_ns {int(ts[a])}, and a label needs a "
                "window that ends after it starts. Merge repeated times first."
            )
        # the clock went back across the window's end (NAB has such): not repeated times
        raise InvalidParameterError(
            f"A window of the history would end before it starts: readings {a + 1} to {b} "
            f"start at ts_ns {int(ts[a])} and the window ends at ts_ns {int(end_ns[i])} "
            f"(the time of the reading after them, or 1 ns after the last), as the "
            "history's time goes back there; a label needs a window that ends after it "
            "starts. Put the readings in time order first."
        )
    return WindowSet(
        device=np.array([device_id] * n, dtype=object),
        start_ns=ts[bounds].astype(np.int64),
        end_ns=end_ns,
        scores=wscore,
        features=np.column_stack(feats),
        feature_names=names,
    )


def window_labels(windows: WindowSet, labels: Sequence[object]) -> tuple[np.ndarray, np.ndarray]:
    """Map stored labels onto windows: ``(y, kind)`` per window.

    ``y`` is 1 (anomaly or a fault class), 0 (normal) or -1 (no label on the window);
    ``kind`` is the label text (``""`` when none). ``labels`` are
    :class:`~edgewise.label.store.Label` objects (anything with ``device_id``,
    ``start_ns``, ``end_ns``, ``label``; the higher ``id``, the store's write order, is
    the newer; without ids the later in ``labels`` is). ``created_ns`` plays no part: it
    is the wall clock, and a clock stepped back would make a later answer the older.

    A window takes a label when the label covers at least half of the window's span, or
    when the window holds at least half of the label's span (so a label shorter than a
    window lands on the window that holds most of it). A label that only grazes a window
    does not label it: windows are cut afresh as history grows (``edgewise label suggest``
    and ``train --with-labels`` make them ``len(history) // 100`` readings long by
    default), so their edges move under labels given earlier, and an ``anomaly`` label
    spilling onto a quiet neighbour would teach the device that quiet is anomalous.

    A window taken by several labels takes the newest of those that cover at least half of
    it over every older one: a person's later ``normal`` on one window inside an older
    ``anomaly`` spanning many (the verdict on a long alert) is that window's answer. As the
    history grows and windows are cut afresh, it stays the answer of a re-cut window as
    long as it covers at least half of that window (a rule asking for the whole window
    lost it when the edges moved): always while windows are no longer than the labelled
    span, depending on where the edges fall while they are up to twice as long, never
    once they are longer. Such a window lies mostly under the older ``anomaly``, and takes
    it again. With the default window length, ``len(history) // 100``, a ``normal`` on 100
    readings is kept up to about 10,000 readings of history and lost past 20,000; a
    ``window`` no longer than the labelled span keeps it. Among
    that label and the newer ones covering less than half of the window (or among all of
    them, when none covers half) an anomalous one wins over ``"normal"``: a fault
    labelled inside a stretch called normal is a fault.

    >>> from types import SimpleNamespace as L
    >>> ws = WindowSet(np.array(["d"] * 3, dtype=object), np.array([0, 10, 20]),
    ...                np.array([10, 20, 30]), np.zeros((3, 1)), np.zeros((3, 1)), ["f"])
    >>> y, kind = window_labels(ws, [L(device_id="d", start_ns=8, end_ns=21,
    ...                                label="anomaly")])
    >>> y.tolist()   # the label fills window 1; it only grazes windows 0 and 2
    [-1, 1, -1]
    >>> window_labels(ws, [L(device_id="d", start_ns=3, end_ns=6, label="normal")])[0].tolist()
    [0, -1, -1]
    >>> alert = L(device_id="d", start_ns=0, end_ns=30, label="anomaly")  # older, all three
    >>> window_labels(ws, [alert, L(device_id="d", start_ns=10, end_ns=20,
    ...                             label="normal")])[0].tolist()
    [1, 0, 1]
    >>> wide = WindowSet(np.array(["d"] * 2, dtype=object), np.array([0, 25]),
    ...                  np.array([25, 50]), np.zeros((2, 1)), np.zeros((2, 1)), ["f"])
    >>> alert = L(device_id="d", start_ns=0, end_ns=50, label="anomaly")
    >>> window_labels(wide, [alert, L(device_id="d", start_ns=10, end_ns=20,
    ...                               label="normal")])[0].tolist()  # windows > 2x its span
    [1, 1]
    """
    y = np.full(len(windows), -1)
    kind = np.array([""] * len(windows), dtype=object)
    # oldest first, in write order: a label covering half a window or more replaces what
    # older ones said of it
    order = sorted(range(len(labels)), key=lambda j: (int(getattr(labels[j], "id", 0) or 0), j))
    for lab in (labels[j] for j in order):
        start, end = int(lab.start_ns), int(lab.end_ns)  # type: ignore[attr-defined]
        hit = np.flatnonzero((windows.device == lab.device_id)  # type: ignore[attr-defined]
                             & (windows.start_ns < end) & (windows.end_ns > start))
        if not len(hit):
            continue
        w0, w1 = windows.start_ns[hit].astype(np.int64), windows.end_ns[hit].astype(np.int64)
        overlap = np.minimum(w1, end) - np.maximum(w0, start)
        bad = is_anomalous(lab.label)  # type: ignore[attr-defined]
        for i, o, a, b in zip(hit, overlap, w0, w1, strict=True):
            # 2 * overlap >= span, in Python ints: spans near 2**63 ns overflow int64
            half = 2 * int(o) >= int(b) - int(a)  # covers at least half of the window
            if not (half or 2 * int(o) >= end - start):
                continue
            if y[i] == 1 and not bad and not half:
                continue
            y[i] = 1 if bad else 0
            kind[i] = lab.label  # type: ignore[attr-defined]
    return y, kind
