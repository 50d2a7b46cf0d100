"""The contract every Edgewise detector passes (River's checks, sklearn's estimator checks).

>>> from edgewise.detect import EWZScore
>>> names = [c.__name__ for c in yield_detector_checks(EWZScore())]
>>> "check_score_many_equals_loop" in names
True
"""

from __future__ import annotations

import copy
import pickle
import tracemalloc
from collections.abc import Callable, Iterator

import numpy as np

from edgewise.detect.base import Detector, reading

__all__ = ["all_detectors", "labelled_series", "roc_auc", "yield_detector_checks"]

Check = Callable[[Detector], None]


def all_detectors() -> list[Detector]:
    """One instance per registered class and parameter set of ``_unit_test_params``."""
    from edgewise.detect import DETECTORS, Threshold

    out: list[Detector] = []
    for cls in [*DETECTORS.values(), Threshold]:
        for params in cls._unit_test_params():
            out.append(cls(**params))
    return out


def labelled_series(n: int = 1500, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A noisy daily-like cycle with a level shift and spikes; labels mark the anomalies."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    x = 10 + np.sin(2 * np.pi * t / 50) + 0.1 * rng.standard_normal(n)
    y = np.zeros(n, dtype=bool)
    for i in (n // 2, (3 * n) // 4, n - 40):
        x[i] += 6.0
        y[i] = True
    return x, y


def _stream(n: int = 300, d: int = 2, seed: int = 0) -> list[dict[str, float]]:
    rng = np.random.default_rng(seed)
    base = rng.standard_normal((n, d)).cumsum(axis=0) * 0.1 + np.arange(d)
    return [{f"m{j}": float(row[j]) for j in range(d)} for row in base]


def check_learn_one_leaves_x_unchanged(det: Detector) -> None:
    """``learn_one`` and ``score_one`` must not modify the reading."""
    for x in _stream(60):
        before = dict(x)
        det.score_one(x)
        det.learn_one(x)
        assert x == before, f"{type(det).__name__} modified its input"


def check_score_before_learn(det: Detector) -> None:
    """Scoring an untrained detector works and gives a valid score."""
    s = det.score_one({"m0": 1.0, "m1": 2.0})
    assert 0.0 <= s <= 1.0


def check_scores_in_unit_interval(det: Detector) -> None:
    """Every score, including for wild values, is a float in [0, 1]."""
    for i, x in enumerate(_stream(200)):
        if i % 37 == 0:
            x = {k: v * 1e6 for k, v in x.items()}
        s = det.score_one(x)
        assert isinstance(s, float) and 0.0 <= s <= 1.0, s
        det.learn_one(x)


def check_non_finite_values_are_missing(det: Detector) -> None:
    """NaN and inf neither crash a detector nor poison what it learned."""
    stream = _stream(120)
    ref = det.clone()
    for i, x in enumerate(stream):
        if i % 10 == 5:
            bad = {k: (float("inf") if j % 2 else float("nan")) for j, k in enumerate(x)}
            assert 0.0 <= det.score_one(bad) <= 1.0
            det.learn_one(bad)
        det.learn_one(x)
        ref.learn_one(x)
    probe = {"m0": 0.3, "m1": 1.2}
    assert det.score_one(probe) == ref.score_one(probe)


def check_score_many_equals_loop(det: Detector) -> None:
    """``score_many`` returns exactly what the score-then-learn loop gives, with missing
    values (NaN, inf) among the readings and in two calls, the second going on from the
    state the first left (one call on a fresh detector could not see state lost or
    changed between calls)."""
    x, _ = labelled_series(600)
    X = np.c_[x, x[::-1]]
    X[np.arange(7, 600, 23), 0] = np.nan
    X[np.arange(11, 600, 31), 1] = np.inf
    X[np.arange(13, 600, 97)] = np.nan  # rows with no value at all
    names = ["m0", "m1"]
    fast_det = det.clone()
    fast = np.r_[fast_det.score_many(X[:250], columns=names),
                 fast_det.score_many(X[250:], columns=names)]
    loop = det.clone()
    slow = []
    for row in X:
        r = reading(names, row)
        slow.append(loop.score_one(r))
        loop.learn_one(r)
    np.testing.assert_allclose(fast, slow, rtol=1e-12, atol=1e-12)


def check_dumps_loads_round_trip(det: Detector) -> None:
    """A restored detector (dumps/loads and pickle) gives the same next scores."""
    stream = _stream(150)
    for x in stream[:100]:
        det.learn_one(x)
    for restored in (Detector.loads(det.dumps()), pickle.loads(pickle.dumps(det))):
        a, b = copy.deepcopy(det), restored
        for x in stream[100:]:
            assert a.score_one(x) == b.score_one(x)
            a.learn_one(x)
            b.learn_one(x)


def check_clone_is_independent(det: Detector) -> None:
    """A clone has the same parameters and shares no learned state: training the clone
    leaves ``det``'s scores as they were (a copy of ``det`` taken before gives the same
    ones). Comparing two fresh clones, as this did, could not fail."""
    for x in _stream(100):
        det.learn_one(x)
    fresh = det.clone()
    assert repr(fresh) == repr(det)
    ref = copy.deepcopy(det)  # det as it was before its clone learned anything
    for x in _stream(100, seed=3):
        fresh.learn_one(x)
    for x in [{"m0": 0.5, "m1": 1.5}, *_stream(20, seed=5)]:
        got, want = det.score_one(x), ref.score_one(x)
        assert got == want, (f"{type(det).__name__} scores {x} {got} after its clone "
                             f"learned, {want} before: the clone shares its learned state")
        det.learn_one(x)
        ref.learn_one(x)


def check_same_params_same_scores(det: Detector) -> None:
    """Two detectors built alike give identical scores (determinism; same seed)."""
    a, b = det.clone(), det.clone()
    for x in _stream(200):
        assert a.score_one(x) == b.score_one(x)
        a.learn_one(x)
        b.learn_one(x)


def check_emerging_and_disappearing_metrics(det: Detector) -> None:
    """Readings gaining, losing or NaN-ing metrics are scored without error."""
    for i, x in enumerate(_stream(120, d=3)):
        if i < 40:
            x.pop("m2")
        elif i > 80:
            x.pop("m0")
        if i % 10 == 0:
            x["m1"] = float("nan")
        s = det.score_one(x)
        assert 0.0 <= s <= 1.0
        det.learn_one(x)
    assert 0.0 <= det.score_one({}) <= 1.0


def check_bounded_memory(det: Detector) -> None:
    """Memory does not grow with the length of the stream: neither the serialised state
    (``dumps``) nor what stays allocated (tracemalloc) grows by more than a small slack
    from 1,000 readings on to 3,000, beside its size at 1,000 (a list of every reading
    seen grows by a third and half again)."""
    stream = _stream(3000)
    for x in stream[:1000]:
        det.learn_one(x)
    size_1k = len(det.dumps())
    tracemalloc.start()
    try:
        for x in stream[1000:2000]:  # warm caches and buffers fill here
            det.score_one(x)
            det.learn_one(x)
        held_2k = tracemalloc.get_traced_memory()[0]
        for x in stream[2000:]:
            det.score_one(x)
            det.learn_one(x)
        held_3k = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert len(det.dumps()) <= size_1k * 1.05 + 256
    assert held_3k - held_2k <= 0.05 * size_1k + 16 * 1024, (
        f"{type(det).__name__} kept {held_3k - held_2k} more bytes allocated over 1,000 "
        f"more readings (state of {size_1k} bytes)")


def check_detects_labelled_anomalies(det: Detector) -> None:
    """ROC AUC above 0.5 on a labelled synthetic series (the NAB version is in tests)."""
    x, y = labelled_series()
    s = det.clone().score_many(x[:, None], columns=["m0"])
    assert roc_auc(s[200:], y[200:]) > 0.5


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve (ties counted half), without scikit-learn.

    >>> roc_auc(np.array([0.1, 0.9, 0.2, 0.8]), np.array([0, 1, 0, 1]))
    1.0
    """
    from scipy.stats import rankdata

    labels = np.asarray(labels, dtype=bool)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError("roc_auc needs both positive and negative labels.")
    ranks = rankdata(scores)
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def yield_detector_checks(det: Detector) -> Iterator[Check]:
    """Every contract check that applies to ``det``."""
    yield check_learn_one_leaves_x_unchanged
    yield check_score_before_learn
    yield check_scores_in_unit_interval
    yield check_score_many_equals_loop
    yield check_non_finite_values_are_missing
    yield check_dumps_loads_round_trip
    yield check_clone_is_independent
    yield check_same_params_same_scores
    yield check_emerging_and_disappearing_metrics
    yield check_bounded_memory
    yield check_detects_labelled_anomalies
