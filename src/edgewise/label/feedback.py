"""Use people's labels on detectors: false alarms teach, confirmed anomalies stay out.

Two forms of the same idea:

* :class:`FeedbackDetector` wraps a streaming :class:`~edgewise.detect.base.Detector`.
  A false alarm raises that stream's threshold just above the alarm and remembers the
  readings as a normal pattern (near-repeats score low, and the pattern is learned);
  a confirmed anomaly is never learned, so it does not shift the notion of normal.
  Unconfirmed alarms are kept out of learning too (``protect=True``).
* :class:`WindowFeedbackModel` does it for history cut into windows
  (:class:`~edgewise.label.windows.WindowSet`): per-device thresholds fitted to the
  labelled windows, plus a per-device memory of labelled patterns (near-duplicates of a
  labelled window take its label). It is what ``edgewise train
  --with-labels`` fits and what the active-learning benchmark measures.

Scores live in z units inside: a calibrated score ``s`` is ``z = -log(1 - s)``, so the
threshold 0.9 is ``z = 2.30`` and a raised threshold stays meaningful near 1.0.

>>> from edgewise.detect.zscore import EWZScore
>>> det = FeedbackDetector(EWZScore())
>>> for t in range(300):
...     x = {"v": 20.0 + (t % 7) * 0.1}
...     _ = det.score_one(x); det.learn_one(x)
>>> det.score_one({"v": 23.0}) >= 0.9          # an alarm ...
True
>>> det.feedback([{"v": 23.0}], "normal")      # ... that a person calls false
>>> det.score_one({"v": 23.0}) < 0.9
True
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from edgewise.detect.base import DEFAULT_THRESHOLD, Detector
from edgewise.errors import InvalidParameterError, NotFittedError
from edgewise.label.store import check_label, is_anomalous
from edgewise.label.windows import WindowSet
from edgewise.params import Interval, validate_params

__all__ = ["FeedbackDetector", "WindowFeedbackModel", "to_z"]


def _balanced_accuracy(pred: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean([np.mean(pred[y] == 1), np.mean(pred[~y] == 0)]))

_ZMAX = -math.log(1e-15)


def to_z(score: np.ndarray | float) -> np.ndarray:
    """Calibrated score in [0, 1] to z units, ``-log(1 - s)`` (0.9 -> 2.30).

    >>> float(np.round(to_z(0.9), 2))
    2.3
    """
    s = np.clip(np.asarray(score, dtype=float), 0.0, 1.0)
    return -np.log(np.clip(1.0 - s, 1e-15, 1.0))


class FeedbackDetector(Detector):
    """A detector that learns from people's answers about its alarms.

    Parameters
    ----------
    detector
        The wrapped detector (any :class:`Detector`).
    threshold
        The alarm threshold the scores are read against.
    protect
        Keep readings scoring at or above the threshold out of learning (unless a person
        said they are normal).
    tolerance
        A reading matches a remembered normal pattern when every metric is within
        ``tolerance`` of it, relative to the pattern's magnitude.
    step
        How far above a false alarm (z units) the stream's threshold is raised.
    max_lower
        The most (z units) a confirmed anomaly may lower the stream's threshold. A
        confirmed reading scored further below the threshold than this (a slow fault the
        detector adapted to scores 0) looks ordinary to the detector: a threshold low
        enough to catch it would alarm on ordinary readings too and, with ``protect``,
        keep them all out of learning. Such a reading changes no threshold and is not
        remembered as an anomaly pattern (everything within ``tolerance`` of it would be
        kept out of learning); it is only counted in ``n_confirmed_``.

    Attributes
    ----------
    offset_
        z units added to the threshold: raised by false alarms, lowered (at most
        ``max_lower``) by confirmed anomalies that did not alarm.
    normal_patterns_
        Readings people called normal; near-repeats score below the threshold.
    anomalies_
        Confirmed readings the detector sees (scored within ``max_lower`` of the
        threshold, or above it); near-repeats are never learned.

    Examples
    --------
    >>> from edgewise.detect.zscore import EWZScore
    >>> det = FeedbackDetector(EWZScore())
    >>> for t in range(300):
    ...     x = {"v": 20.0 + (t % 7) * 0.1}
    ...     _ = det.score_one(x); det.learn_one(x)
    >>> det.feedback([{"v": 20.3}], "anomaly")    # scored 0: looks ordinary
    >>> det.offset_, det.score_one({"v": 20.4}) < 0.9
    (0.0, True)
    """

    _constraints: ClassVar[dict[str, Any]] = {
        "threshold": Interval(float, 0.0, 1.0, closed="neither"),
        "protect": bool,
        "tolerance": Interval(float, 0.0, None),
        "step": Interval(float, 0.0, None),
        "max_lower": Interval(float, 0.0, None),
    }

    def __init__(self, detector: Detector, threshold: float = DEFAULT_THRESHOLD,
                 protect: bool = True, tolerance: float = 0.05, step: float = 0.25,
                 max_lower: float = 1.5) -> None:
        if not isinstance(detector, Detector):
            raise InvalidParameterError(
                f"The 'detector' parameter of FeedbackDetector must be a Detector. "
                f"Got {type(detector).__name__} instead."
            )
        # numpy's bool (a mask's element, np.bool_) is a bool too: kept as Python's
        protect = bool(protect) if isinstance(protect, np.bool_) else protect
        validate_params(self._constraints, {"threshold": threshold, "protect": protect,
                                            "tolerance": tolerance, "step": step,
                                            "max_lower": max_lower}, self)
        self.detector = detector
        self.threshold = threshold
        self.protect = protect
        self.tolerance = tolerance
        self.step = step
        self.max_lower = max_lower
        self.offset_ = 0.0  # z units added to the threshold by false alarms (or removed)
        self.normal_patterns_: list[dict[str, float]] = []
        self.anomalies_: list[dict[str, float]] = []
        self.n_false_alarms_ = 0
        self.n_confirmed_ = 0

    def clone(self) -> FeedbackDetector:
        return FeedbackDetector(self.detector.clone(), self.threshold, self.protect,
                                self.tolerance, self.step, self.max_lower)

    def _matches(self, x: Mapping[str, float], patterns: list[dict[str, float]]) -> bool:
        for p in patterns:
            if p.keys() == x.keys() and all(
                abs(x[k] - v) <= self.tolerance * max(abs(v), 1e-9) for k, v in p.items()
            ):
                return True
        return False

    def _raw_z(self, x: Mapping[str, float]) -> float:
        return float(to_z(self.detector.score_one(x)))

    def score_one(self, x: Mapping[str, float]) -> float:
        z = self._raw_z(x)
        if self.normal_patterns_ and self._matches(x, self.normal_patterns_):
            z = min(z, float(to_z(self.threshold)) * 0.5)
        z -= self.offset_
        return 0.0 if z <= 0 else float(1.0 - math.exp(-z))

    def learn_one(self, x: Mapping[str, float]) -> None:
        if self.anomalies_ and self._matches(x, self.anomalies_):
            return
        if self.protect and self.score_one(x) >= self.threshold:
            return
        self.detector.learn_one(x)

    def feedback(self, readings: Sequence[Mapping[str, float]], label: str) -> None:
        """Tell the detector what a person said about ``readings`` (an alarm's window).

        ``"normal"`` (a false alarm) raises the stream's threshold just above these
        readings' scores (at most so high that a reading scored 1.0 still alarms),
        remembers them as a normal pattern and learns them;
        ``"anomaly"`` or a fault class keeps them out of learning, and lowers the
        threshold if they had not raised an alarm, by at most ``max_lower``: readings
        scored lower than that look ordinary to the detector and change nothing but
        ``n_confirmed_`` (see ``max_lower``).

        ``label`` is checked as :meth:`~edgewise.label.store.LabelStore.add` checks it
        (:func:`~edgewise.label.store.check_label`): anything else, an alert's verdict
        (``"false_alarm"``) or a misspelt ``"Normal"`` included, raises
        :class:`InvalidParameterError` and changes nothing.
        """
        # as a stored label is checked: anything but exactly "normal" counted as a fault
        # confirmed, so "false_alarm", "Normal" or "normal " kept a false alarm alarming
        check_label(label, "The 'label' of FeedbackDetector.feedback")
        rows = [dict(r) for r in readings]
        if not rows:
            return
        z_thr = float(to_z(self.threshold))
        if not is_anomalous(label):
            self.n_false_alarms_ += 1
            zmax = max(self._raw_z(r) for r in rows)
            self.normal_patterns_.extend(rows)
            if zmax - self.offset_ >= z_thr:
                # at most so high that a reading scored 1.0 still alarms: raised above
                # the highest score (z of 1.0 is _ZMAX), the threshold alarmed on nothing
                # ever again (a sensor glitch called normal scored 1.0, and so did every
                # fault after it); repeats of the false alarm are the pattern memory's
                top = _ZMAX - z_thr - 1e-6
                self.offset_ = max(self.offset_, min(zmax - z_thr + self.step, top))
            for r in rows:
                self.detector.learn_one(r)
        else:
            self.n_confirmed_ += 1
            # A threshold lowered to catch a reading scored about 0 (a slow drift the
            # detector adapted to) alarmed on every ordinary reading and, with protect,
            # kept them all out of learning: the detector froze. A person confirming one
            # fault expects that fault and its look-alikes to alarm, not everything; so
            # only readings within max_lower of the threshold (and scored above 0) lower
            # it or become anomaly patterns. The others are indistinguishable from
            # ordinary readings to this detector, so learning them shifts little.
            seen = [(z, r) for z, r in ((self._raw_z(r), r) for r in rows)
                    if z > 0 and z >= z_thr - self.max_lower]
            self.anomalies_.extend(r for _, r in seen)
            if seen:
                zmax = max(z for z, _ in seen)
                if zmax - self.offset_ < z_thr:
                    self.offset_ = zmax - z_thr - 1e-6


def _check_finite(windows: WindowSet, who: str) -> None:
    """Refuse a window with a non-finite feature or detector score, naming the first.

    :func:`~edgewise.label.windows.windows_from_series` never makes one; a WindowSet built
    by hand may. One NaN feature made the feature's median NaN, so every distance of the
    pattern memory was NaN (the memory matched nothing on the whole device) and the
    classifier was dropped, silently; a NaN score gave a NaN margin, never an alarm.

    >>> ws = WindowSet(np.array(["d"]), np.array([0]), np.array([1]), np.zeros((1, 1)),
    ...                np.array([[np.nan]]), ["level"])
    >>> _check_finite(ws, "fit")
    Traceback (most recent call last):
    ...
    edgewise.errors.InvalidParameterError: fit needs finite window features and scores. Got nan as feature 'level' of window 0 (device 'd'); 1 non-finite value(s) in all. Fill or drop such windows first.
    """  # noqa: E501
    for what, arr, names in (("feature", windows.features, list(windows.feature_names)),
                             ("score", windows.scores, None)):
        a = np.asarray(arr, dtype=float)
        bad = np.argwhere(~np.isfinite(a))
        if len(bad):
            i, j = (int(v) for v in bad[0])
            name = repr(names[j]) if names is not None and j < len(names) else str(j)
            raise InvalidParameterError(
                f"{who} needs finite window features and scores. Got {a[i, j]} as {what} "
                f"{name} of window {i} (device {str(windows.device[i])!r}); {len(bad)} "
                "non-finite value(s) in all. Fill or drop such windows first.",
                field="windows", value=float(a[i, j]))


def _distances(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """Euclidean distances between the rows of ``A`` and of ``B``, ``(len(A), len(B))``:
    0 exactly between equal rows (no ``|a|² + |b|² - 2ab`` rounding)."""
    from scipy.spatial.distance import cdist

    return cdist(A, B)


def _memory_fit(F: np.ndarray, device: np.ndarray, F_lab: np.ndarray, dev_lab: np.ndarray,
                radius: float, max_share: float,
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The pattern memory of labelled windows ``F_lab`` (of devices ``dev_lab``) among the
    windows ``F`` (of devices ``device``, the labelled ones among them): ``(center, scale,
    X_lab, reach)``.

    Features are centred on their median and scaled by their MAD (their standard
    deviation where the MAD is 0, 1 where that is 0 too), so that one outlier window does
    not squash the others together. A labelled window's reach is ``radius`` times its
    device's median nearest-neighbour distance between windows, and at most the distance
    to its ``k = max(1, max_share * n)``-th nearest other window of the device (``n``
    windows): a label carries to near-duplicates of its window, and one label never takes
    more than a small share of a device's windows (of windows tied at the ``k``-th distance,
    none is taken). A labelled window whose features more than ``k`` others share exactly
    gets reach -1: it is remembered for nothing, not even itself (the memory cannot tell
    it from the others).

    >>> F = np.r_[np.arange(100.0), 1e6][:, None]       # evenly spread, and one outlier
    >>> dev = np.array(["d"] * 101)
    >>> c, s, X, reach = _memory_fit(F, dev, F[[50]], dev[:1], 1.5, 0.03)
    >>> int((np.abs((F[:, 0] - c[0]) / s[0] - X[0, 0]) <= reach[0]).sum())  # 49, 50, 51
    3
    """
    center = np.median(F, axis=0)
    mad = np.median(np.abs(F - center), axis=0) * 1.4826
    sd = F.std(axis=0)
    scale = np.where(mad > 0, mad, np.where(sd > 0, sd, 1.0))
    X = (F - center) / scale
    X_lab = (F_lab - center) / scale
    reach = np.zeros(len(F_lab))
    for dev in np.unique(dev_lab) if len(dev_lab) and radius > 0 else []:
        own = X[device == dev]
        mine = np.flatnonzero(dev_lab == dev)
        if len(own) < 2:
            continue
        nn = np.empty(len(own))
        for a in range(0, len(own), 1024):  # bounded memory on long histories
            d = _distances(own[a:a + 1024], own)
            d[np.arange(len(d)), np.arange(a, a + len(d))] = np.inf  # not itself
            nn[a:a + 1024] = d.min(axis=1)
        k = min(max(1, int(max_share * len(own))), len(own) - 1)
        d = _distances(X_lab[mine], own)
        # the (k+1)-th nearest of the device's windows: itself (distance 0) comes first
        r = np.minimum(radius * float(np.median(nn)), np.partition(d, k, axis=1)[:, k])
        # windows tied at that distance would all be taken: keep to those nearer. A
        # pattern more than k windows share exactly (a flat stretch, a few-level series)
        # says nothing of this window: on NAB's art_increase_spike_density 60 windows had
        # one labelled window's features, and the label took them all
        for j in np.flatnonzero((d <= r[:, None]).sum(axis=1) > k + 1):
            nearer = d[j][d[j] < r[j]]
            r[j] = nearer.max() if len(nearer) else -1.0
        reach[mine] = r
    return center, scale, X_lab, reach


class WindowFeedbackModel:
    """Per-device thresholds and pattern memory fitted to labelled windows.

    Parameters
    ----------
    threshold
        The calibrated threshold before any label (the detectors' default).
    radius
        The pattern memory's reach: a window of the same device takes a labelled
        window's label when it is within ``radius`` times the device's median
        nearest-neighbour distance (between its own windows, in feature space scaled by
        median and MAD) of it, and among the ``max_share`` of the device's windows
        nearest to it; 0 turns the memory off. A label so carries to near-duplicates of
        its window only: a fixed distance in features scaled by their standard deviation
        let one outlier window squash all the others together, and one label took 35 of
        101 windows (100 of 101 alarmed on NAB's ec2_cpu_utilization_24ae8d).
    max_share
        The most of a device's windows (a fraction; at least one) one labelled window's
        pattern may take besides itself.
    max_raise
        The most (z units) false alarms may raise a device's threshold; repeats of a
        false alarm's pattern are silenced by the memory instead, so one loud false
        alarm does not blind the device to every fault below it.
    max_lower
        The most (z units) anomaly labels may lower a device's threshold. A labelled
        anomaly scored further below (a slow fault the detector adapted to scores 0) is
        left to the pattern memory and the classifier: a threshold low enough to catch it
        would make most of the device's windows alarm.
    classifier
        Also learn, fleet-wide, what labelled anomalies look like in (scale-free) feature
        space: an extra-trees classifier of the labelled windows whose log-odds are added
        to the detector's margin, weighted by ``n_anomalies / (n_anomalies + evidence)``.
        Slow faults (drift, a stuck sensor, wear) barely move a streaming detector's
        score, so thresholds alone cannot use a label saying "this was a fault"; the
        classifier can, and carries it to similar windows of every device. It is only
        used when, cross-validated on the labelled windows, it beats the thresholds alone
        (on corpora of unrelated series a fleet-wide look-alike says little). It may raise
        alarms on any device (how a fault learned on one device reaches the others) but
        silence them only on devices with at least one answer of their own: on a device
        nobody has answered about, only its positive log-odds count, so silencing there
        would hide faults with no human evidence about that device.
    evidence
        Anomaly labels at which the classifier gets half its weight.

    Attributes
    ----------
    thresholds_
        Device -> threshold in z units, for devices with labels.
    n_labels_
        Number of labelled windows used.

    Examples
    --------
    >>> import numpy as np
    >>> from edgewise.label.windows import windows_from_series
    >>> rng = np.random.default_rng(1)
    >>> x = rng.normal(0, 1, 3000); x[1000:1003] += 6; x[2000:2003] += 12
    >>> ws = windows_from_series(x, np.arange(3000) * 10**9, "d1", length=50)
    >>> y = np.full(len(ws), -1); y[20] = 0          # the smaller bump: a false alarm
    >>> m = WindowFeedbackModel().fit(ws, y)
    >>> bool(m.predict(ws)[20]), bool(m.predict(ws)[40])
    (False, True)
    """

    def __init__(self, threshold: float = DEFAULT_THRESHOLD, radius: float = 0.5,
                 max_raise: float = 2.0, classifier: bool = True, evidence: float = 5.0,
                 random_state: int = 0, max_lower: float = 1.5,
                 max_share: float = 0.05) -> None:
        self.threshold = threshold
        self.radius = radius
        self.max_share = max_share
        self.max_raise = max_raise
        self.max_lower = max_lower
        self.classifier = classifier
        self.evidence = evidence
        self.random_state = random_state

    def fit(self, windows: WindowSet, y: np.ndarray) -> WindowFeedbackModel:
        """Fit to ``y``: 1 anomaly, 0 normal, -1 unlabelled, one per window."""
        validate_params({"threshold": Interval(float, 0.0, 1.0, closed="neither"),
                         "radius": Interval(float, 0.0, None),
                         "max_raise": Interval(float, 0.0, None),
                         "max_lower": Interval(float, 0.0, None), "classifier": bool,
                         "evidence": Interval(float, 0.0, None, closed="neither"),
                         "max_share": Interval(float, 0.0, 1.0, closed="right")},
                        {"threshold": self.threshold, "radius": self.radius,
                         "max_raise": self.max_raise, "max_lower": self.max_lower,
                         "classifier": bool(self.classifier)
                         if isinstance(self.classifier, np.bool_) else self.classifier,
                         "evidence": self.evidence,
                         "max_share": self.max_share}, self)
        y = np.asarray(y)
        if len(y) != len(windows):
            raise InvalidParameterError(
                f"WindowFeedbackModel.fit needs one label per window ({len(windows)}). "
                f"Got {len(y)} instead."
            )
        _check_finite(windows, "WindowFeedbackModel.fit")
        F = windows.features
        self.mean_ = F.mean(axis=0)
        sd = F.std(axis=0)
        self.scale_ = np.where(sd > 0, sd, 1.0)
        t0 = float(to_z(self.threshold))
        self.t0_ = t0
        lab = np.flatnonzero(y >= 0)
        self.n_labels_ = len(lab)
        self.thresholds_: dict[str, float] = {}
        z = to_z(windows.scores[:, 0])
        for dev in np.unique(windows.device[lab]) if len(lab) else []:
            m = lab[windows.device[lab] == dev]
            self.thresholds_[str(dev)] = min(
                self._fit_threshold(z[m], y[m] == 1, t0, z[windows.device == dev],
                                    self.max_lower),
                t0 + self.max_raise)
        self.memory_device_ = windows.device[lab]
        self.memory_y_ = (y[lab] == 1)
        (self.memory_center_, self.memory_scale_, self.memory_X_,
         self.memory_radius_) = _memory_fit(F, windows.device, F[lab], windows.device[lab],
                                            self.radius, self.max_share)
        self.clf_ = None
        self.clf_weight_ = 0.0
        pos = y[lab] == 1
        if self.classifier and pos.sum() >= 2 and (~pos).sum() >= 2:
            X = (F[lab] - self.mean_) / self.scale_
            det = to_z(windows.scores[lab, 0]) - np.array(
                [self.thresholds_[str(d)] for d in windows.device[lab]])
            weight = float(pos.sum() / (pos.sum() + self.evidence))
            # k-fold check on the labelled windows: does the classifier add anything?
            folds = np.arange(len(lab)) % 3
            p_cv = np.full(len(lab), 0.5)
            for f in range(3):
                tr = folds != f
                if pos[tr].any() and (~pos[tr]).any():
                    p_cv[~tr] = self._trees(X[tr], pos[tr]).predict_proba(X[~tr])[:, 1]
            if (_balanced_accuracy(self._combine(det, p_cv, weight) >= 0, pos)
                    > _balanced_accuracy(det >= 0, pos)):
                self.clf_ = self._trees(X, pos)
                self.clf_weight_ = weight
        return self

    def _trees(self, X: np.ndarray, y: np.ndarray) -> Any:
        from sklearn.ensemble import ExtraTreesClassifier

        return ExtraTreesClassifier(n_estimators=60, class_weight="balanced",
                                    random_state=self.random_state, n_jobs=1).fit(X, y)

    @staticmethod
    def _combine(margin: np.ndarray, p: np.ndarray, weight: float) -> np.ndarray:
        """Detector margin (capped at 3 z) plus the classifier's weighted log-odds."""
        p = np.clip(p, 0.02, 0.98)
        return np.clip(margin, -3.0, 3.0) + 3.0 * weight * np.log(p / (1 - p))

    @staticmethod
    def _fit_threshold(z: np.ndarray, pos: np.ndarray, t0: float,
                       z_all: np.ndarray | None = None, max_lower: float = 1.5) -> float:
        """The threshold that best separates labelled alarms from false ones; of those that
        do it equally well, the one raising the fewest alarms over the device's windows
        ``z_all``, then the one nearest t0.

        Two answers of "anomaly" on windows scored 0 inside a fault the detector had
        already raised, beside two false alarms, separate as well at 0 as above every
        window; at 0 every window of the device would alarm.

        >>> z = np.array([0.0, 0.0, 30.0, 5.0, 7.0]); pos = np.array([1, 1, 1, 0, 0]) == 1
        >>> WindowFeedbackModel._fit_threshold(z, pos, 2.3, np.r_[z, np.zeros(95)]) > 7
        True
        >>> WindowFeedbackModel._fit_threshold(np.array([0.0]), np.array([True]), 2.3)
        2.3
        """
        # The threshold stays above 0 and at most max_lower below t0, and without a
        # "normal" answer it does not rise. A person who labels one fault expects that
        # fault and its look-alikes to alarm (the pattern memory and the classifier do
        # that), not the whole device: an "anomaly" on a window scored 0 (a slow drift
        # the detector adapted to) pulled the threshold to 0 and every window alarmed.
        # Nor should confirming a loud alarm silence the quieter ones nobody called
        # false: the fewest-alarms rule raised the threshold up to the confirmed window.
        # With "normal" answers it rises only just above the loudest of them: a normal
        # answer on a quiet window (scored below t0) raises nothing. Unbounded above,
        # the fewest-alarms rule lifted it to the weakest confirmed fault, and a fault
        # scored below that one no longer alarmed (five normal answers on quiet
        # windows silenced one of five real faults).
        hi = max(t0, float(z[~pos].max()) + 1e-6) if (~pos).any() else t0
        cands = np.unique(np.concatenate([[t0], z, z + 1e-6]))
        cands = cands[(cands > 0) & (cands >= t0 - max_lower) & (cands <= hi)]  # holds t0
        z_all = z if z_all is None else z_all
        gain = [(int((pos & (z >= c)).sum() - (~pos & (z >= c)).sum()),
                 -int((z_all >= c).sum()), -abs(c - t0), c) for c in cands]
        return float(max(gain)[3])

    def _check(self) -> None:
        if not hasattr(self, "thresholds_"):
            raise NotFittedError(
                "This WindowFeedbackModel is not fitted yet; call fit(windows, y) first."
            )

    def _device_thresholds(self, windows: WindowSet) -> np.ndarray:
        return np.array([self.thresholds_.get(str(d), self.t0_) for d in windows.device])

    def _memory(self, windows: WindowSet) -> tuple[np.ndarray, np.ndarray]:
        """(has a labelled neighbour within its reach, that neighbour's label) per window."""
        n = len(windows)
        hit = np.zeros(n, dtype=bool)
        lab = np.zeros(n, dtype=bool)
        if self.radius <= 0 or len(self.memory_y_) == 0:
            return hit, lab
        if hasattr(self, "memory_radius_"):
            center, scale = self.memory_center_, self.memory_scale_
            mem_X, reach = self.memory_X_, self.memory_radius_
        else:
            # a model saved before the memory's reach was relative kept the labelled
            # windows' features scaled by mean and sd: undo that, and measure the reach
            # on the windows scored (the device's history, as a model is used); its radius
            # (1.0 then, a distance) is read as today's, relative to the windows' spacing
            center, scale, mem_X, reach = _memory_fit(
                windows.features, windows.device, self.memory_X_ * self.scale_ + self.mean_,
                self.memory_device_, self.radius, getattr(self, "max_share", 0.05))
        X = (windows.features - center) / scale
        for dev in np.unique(self.memory_device_):
            rows = np.flatnonzero(windows.device == dev)
            mem = np.flatnonzero(self.memory_device_ == dev)
            if len(rows) == 0:
                continue
            d = _distances(X[rows], mem_X[mem]) - reach[mem][None, :]
            near = d.argmin(axis=1)  # the labelled window whose reach it is deepest in
            close = d[np.arange(len(rows)), near] <= 0
            hit[rows[close]] = True
            lab[rows[close]] = self.memory_y_[mem][near[close]]
        return hit, lab

    def decision_function(self, windows: WindowSet) -> np.ndarray:
        """Margin per window: score minus its device's threshold, z units (> 0: alarm).

        Windows the pattern memory decides are pushed to the side of their label.
        """
        self._check()
        _check_finite(windows, "WindowFeedbackModel.decision_function")
        m = to_z(windows.scores[:, 0]) - self._device_thresholds(windows)
        hit, lab = self._memory(windows)
        m[hit & lab] = np.abs(m[hit & lab]) + 1.0
        m[hit & ~lab] = -np.abs(m[hit & ~lab]) - 1.0
        if self.clf_ is not None:
            X = (windows.features - self.mean_) / self.scale_
            p = self.clf_.predict_proba(X)[:, 1]
            # Raise anywhere, silence only where answered: on a device with no answer of
            # its own the classifier's log-odds count only where they are positive (p >
            # 0.5), so it can add alarms there but never push one below the threshold.
            # Silencing a device nobody has looked at, on other devices' answers, hides
            # its faults with no human evidence about it (on NAB, 5 answers silenced half
            # the corpus's alarms).
            answered = np.array([str(d) in self.thresholds_ for d in windows.device],
                                dtype=bool)
            p = np.where(answered, p, np.maximum(p, 0.5))
            m = self._combine(m, p, self.clf_weight_)
        return m

    def member_margins(self, windows: WindowSet) -> np.ndarray:
        """Margins of every ensemble detector against the device threshold (for Disagreement)."""
        self._check()
        return to_z(windows.scores) - self._device_thresholds(windows)[:, None]

    def predict(self, windows: WindowSet) -> np.ndarray:
        """True where the window is an anomaly."""
        return self.decision_function(windows) >= 0
