"""Detector hunt (s38a): a metric read once in DriftResidual's span, parameters the
constraints took that broke a detector (inf, a suppression past int64) or refused
(NumPy scalars), X and ``columns`` that do not fit, and a docstring naming a class that
does not exist."""

from __future__ import annotations

import importlib
import math
import re

import numpy as np
import pytest

import edgewise.detect.context_likelihood as context_likelihood_module
from edgewise.detect import (
    DETECTORS,
    ContextLikelihood,
    DriftResidual,
    EWZScore,
    LongRunResidual,
    Mahalanobis,
    PerMetricResidual,
    TwoState,
)
from edgewise.detect.base import reading, readings
from edgewise.detect.drift_residual import MIN_SPAN_READINGS
from edgewise.errors import InvalidParameterError
from edgewise.params import Interval

RESIDUALS = [DriftResidual, PerMetricResidual, LongRunResidual]


def _battery(n: int = 1600, every: int = 250) -> np.ndarray:
    """A flow read every row and a battery read every ``every`` rows from row 399 on: the
    default 400-row span holds one battery reading."""
    rng = np.random.default_rng(0)
    batt = np.full(n, np.nan)
    batt[399::every] = 3.70 + 0.01 * rng.normal(size=len(batt[399::every]))
    return np.c_[30 + rng.normal(size=n), batt]


# -- 1. a metric read once in the training span ------------------------------------------
@pytest.mark.parametrize("cls", RESIDUALS)
def test_a_metric_read_once_in_the_span_is_left_out_not_alarmed_on_for_good(cls: type) -> None:
    """Check a metric with one reading in the span is left out, as one first seen later
    (before: its deviation was 0, floored to 1e-12 of its level, and every later normal
    battery reading scored 1, all 4 of them here)."""
    X = _battery()
    det = cls()
    s = det.score_many(X, ["flow", "batt"])
    read = np.flatnonzero(~np.isnan(X[400:, 1])) + 400
    assert len(read) == 4 and not (s[read] >= 0.9).any(), s[read]
    assert list(det.metrics_) == ["flow"]
    scores, top = cls().score_explain_many(X, ["flow", "batt"])
    assert np.array_equal(scores, s) and "batt" not in top


def test_a_metric_read_twice_in_the_span_is_kept() -> None:
    """Check the least a span must hold of a metric is :data:`MIN_SPAN_READINGS` (2)."""
    assert MIN_SPAN_READINGS == 2
    det = DriftResidual(train_rows=20)
    for i in range(20):
        det.learn_one({"flow": 30.0 + i % 3, **({"batt": 3.7 + 0.01 * i} if i in (4, 9) else {})})
    assert list(det.metrics_) == ["batt", "flow"]


def test_a_span_of_metrics_each_read_once_scores_nothing() -> None:
    """Check a span where no metric is read twice leaves none to score: 0, no crash (before,
    each such metric's next reading scored 1)."""
    det = DriftResidual(train_rows=2)
    det.learn_one({"a": 1.0})
    det.learn_one({"b": 2.0})
    assert det.metrics_ == {}
    assert det.score_one({"a": 5.0, "b": 1.0}) == 0.0 and det.explain_one({"a": 1.0}) == {}
    fresh = DriftResidual(train_rows=2)
    s = fresh.score_many(np.array([[1.0, np.nan], [np.nan, 2.0], [5.0, 1.0]]), ["a", "b"])
    assert s.tolist() == [0.0, 0.0, 0.0]


# -- 3. parameters -----------------------------------------------------------------------
def _spikes() -> np.ndarray:
    rng = np.random.default_rng(0)
    x = 20 + 0.3 * rng.standard_normal(3000)
    x[1000:1003] = 40
    x[2000] = 45
    return x


@pytest.mark.parametrize(("big", "ordinary"), [
    ({"suppress_rate": 1e20}, {"suppress_rate": 1e6}),
    ({"suppress": 10**30}, {"suppress": 10**15}),
])
def test_a_suppression_past_int64_still_suppresses(big: dict, ordinary: dict) -> None:
    """Check a suppression longer than an int64 holds is clamped, not cast to a negative
    count (before: ``suppress_rate=1e20`` turned the repeat suppression off, 13 alarms
    instead of 2; ``suppress=10**30`` gave 4)."""
    x = _spikes()
    want = np.flatnonzero(ContextLikelihood(**ordinary).score_many(x) >= 0.9).tolist()
    det = ContextLikelihood(**big)
    got = np.flatnonzero(det.score_many(x) >= 0.9).tolist()
    assert got == want == [303, 1000]
    loop = ContextLikelihood(**big)
    slow = []
    for v in x[:1100]:
        slow.append(loop.score_one({"v": v}))
        loop.learn_one({"v": v})
    assert np.array_equal(np.array(slow), ContextLikelihood(**big).score_many(x[:1100]))


@pytest.mark.parametrize(("cls", "name"), [
    (EWZScore, "z0"), (Mahalanobis, "tail_digits"), (TwoState, "tail_digits"),
    (DriftResidual, "gate"), (DriftResidual, "margin"), (ContextLikelihood, "suppress_rate"),
    (ContextLikelihood, "z_scale"),
])
def test_inf_is_refused_where_the_range_ends_open_at_inf(cls: type, name: str) -> None:
    """Check ``inf`` is outside '[0, inf)' and '(0, inf)' as they say (before: taken, and
    ``z0=inf`` or ``tail_digits=inf`` never alarmed)."""
    with pytest.raises(InvalidParameterError, match=rf"'{name}' parameter of {cls.__name__} "
                                                    r"must be a float in the range .*inf\)\. "
                                                    r"Got inf instead"):
        cls(**{name: math.inf})


def test_a_range_that_takes_inf_says_so_and_spike_inf_still_turns_the_bound_off() -> None:
    """Check ``spike=math.inf`` (documented: no spike bound) is taken, its range reads
    '[1, inf]', and an open-ended Interval refuses inf and -inf."""
    assert DriftResidual(spike=math.inf).spike == math.inf
    with pytest.raises(InvalidParameterError, match=r"range \[1, inf\]\. Got 0\.5"):
        DriftResidual(spike=0.5)
    iv = Interval(float, 0.0, None, closed="neither")
    assert not iv.accepts(math.inf) and not Interval(float, None, 0.0).accepts(-math.inf)
    assert Interval(float, None, None).accepts(-1e308)
    assert not Interval(float, 0.0, None).accepts(10**400)  # no float holds it


def test_numpy_scalars_are_taken_bools_are_not() -> None:
    """Check np.int64 and np.float32 pass an int / float range (before: 'must be an int
    ... Got np.int64(5) instead'), and a bool of either kind still does not."""
    det = EWZScore(warmup=np.int64(5), alpha=np.float32(0.1), z0=np.float64(3.0))
    assert det.score_many(np.r_[np.zeros(20) + np.arange(20) % 2, 50.0])[-1] > 0.9
    s = DriftResidual(train_rows=np.int64(20), margin=np.float32(1.5)).score_many(
        np.c_[np.arange(40) % 3, np.arange(40) % 5].astype(float))
    assert s.shape == (40,)
    for bad in (True, np.bool_(True)):
        with pytest.raises(InvalidParameterError, match="'warmup' parameter of EWZScore"):
            EWZScore(warmup=bad)


# -- 4. X and columns that do not fit ----------------------------------------------------
def _build(name: str) -> object:
    small = {"mahalanobis": {"warmup": 5}}
    cls = DETECTORS[name]
    params = small.get(name, {"train_rows": 20} if "train_rows" in cls.param_names() else {})
    return cls(**params)


@pytest.mark.parametrize("name", sorted(DETECTORS))
def test_3d_input_is_refused_with_its_shape(name: str) -> None:
    """Check a 3-D X is refused naming its shape (before: a Numba TypingError or 'only
    0-dimensional arrays can be converted')."""
    with pytest.raises(InvalidParameterError, match=r"X must be 1-D .* or 2-D .*shape "
                                                    r"\(4, 2, 2\)"):
        _build(name).score_many(np.zeros((4, 2, 2)))


@pytest.mark.parametrize("name", sorted(DETECTORS))
@pytest.mark.parametrize("columns", [["a", "b"], ["a", "b", "c", "d"]])
def test_columns_that_do_not_name_each_column_are_refused(name: str, columns: list) -> None:
    """Check ``columns`` of another length than X's width is refused, naming it (before:
    'zip() argument 2 is longer than argument 1', or ignored by context-likelihood)."""
    X = np.random.default_rng(0).standard_normal((80, 3))
    with pytest.raises(InvalidParameterError, match=r"'columns' argument must name each column "
                                                    r"of X \(3 columns"):
        _build(name).score_many(X, columns)


def test_columns_as_one_string_and_reading_with_too_few_names_are_refused() -> None:
    """Check ``columns="flow"`` (a string, read before as 4 names) and ``reading`` with
    names of another length say what is wrong."""
    with pytest.raises(InvalidParameterError, match=r"list of names, one per column of X "
                                                    r"\(1\)\. Got 'flow'"):
        readings(np.zeros(5), "flow")  # type: ignore[arg-type]
    with pytest.raises(InvalidParameterError, match=r"A row of 2 values needs one name each: "
                                                    r"got 1 names \(\['a'\]\)"):
        reading(["a"], np.array([1.0, 2.0]))
    X, names = readings(np.zeros((3, 2)), (c for c in "ab"))
    assert names == ["a", "b"] and X.shape == (3, 2)


# -- 5. the docstring names classes that exist ---------------------------------------------
def test_context_likelihood_docstring_names_classes_that_exist() -> None:
    """Check every class the module docstring points to imports (it named
    ``edgewise.detect.pca.StreamingPCA``, which does not exist)."""
    targets = re.findall(r":class:`~?([\w.]+)`", context_likelihood_module.__doc__ or "")
    assert targets
    for target in targets:
        module, _, attr = target.rpartition(".")
        where = importlib.import_module(module) if module else context_likelihood_module
        assert hasattr(where, attr), target
