"""Session 47's hunt of the alert explanation: a reading that is not a finite number is no
reading (as a NaN already was), and out-of-range parameters are refused by name."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edgewise.errors import InvalidParameterError
from edgewise.explain.alerts import alert_explanation


def _rows():
    """Three correlated metrics for 100 reading times, then a reading that breaks them."""
    rng = np.random.default_rng(0)
    rows = []
    for t in range(100):
        x = rng.normal()
        rows += [(m, t, (i + 1) * x + 0.1 * rng.normal()) for i, m in enumerate("abc")]
    return [*rows, ("a", 100, 1.0), ("b", 100, -5.0), ("c", 100, 3.0)]


@pytest.mark.parametrize("bad", [math.inf, -math.inf, math.nan])
@pytest.mark.parametrize("where", [10, 100])  # in the reference, in the alert's span
def test_a_non_finite_reading_is_no_reading(bad, where):
    """Check that an inf reading (in the reference or the span) is taken as no reading, the
    metric's last value carrying over it, as a NaN is: the explanation equals the one
    without it. One inf reading gave 'no finite T²' (and RuntimeWarnings) for the alert."""
    rows = _rows()
    i = next(k for k, r in enumerate(rows) if r[0] == "a" and r[1] == where)
    with_bad = [*rows[:i], ("a", where, bad), *rows[i + 1:]]
    without = rows[:i] + rows[i + 1:]
    ex, ref = alert_explanation(with_bad, 100, 100), alert_explanation(without, 100, 100)
    assert ex.check() and ex.contributions == ref.contributions and ex.shares == ref.shares
    assert math.isclose(sum(ex.shares.values()), 1.0) and ex.value == ref.value


@pytest.mark.parametrize(("kw", "said"), [
    ({"shrinkage": -0.5}, ("'shrinkage' parameter of alert_explanation must be a float in "
                          "the range [0, 1]. Got -0.5")),
    ({"shrinkage": 1.5}, "Got 1.5"),
    ({"shrinkage": math.nan}, "Got nan"),
    ({"min_reference": 0}, ("'min_reference' parameter of alert_explanation must be an int "
                           "in the range [1, inf). Got 0")),
    ({"min_reference": math.nan}, "Got nan"),
    ({"min_reference": True}, "Got True"),
])
def test_out_of_range_parameters_are_refused(kw, said):
    """Check that shrinkage outside [0, 1] or NaN, and min_reference below 1 or not an int,
    are refused naming the value and the range: shrinkage -0.5 gave a negative T² (-4.2)
    with every share 0, 1.5 and min_reference NaN were taken silently."""
    with pytest.raises(InvalidParameterError) as err:
        alert_explanation(_rows(), 100, 100, **kw)
    assert said in str(err.value)


def test_a_span_that_ends_before_it_starts_is_refused():
    """Check that start_ns > end_ns is named as such, not as 'no reading in the span'."""
    with pytest.raises(InvalidParameterError, match=r"start_ns <= end_ns\). Got "
                                                    r"start_ns=100, end_ns=99"):
        alert_explanation(_rows(), 100, 99)


@pytest.mark.parametrize("k", [-1, 1.5, True])
def test_top_takes_a_count_of_zero_or_more(k):
    """Check that top(k) refuses a k that is no count (an int >= 0) on both explanations:
    top(-1) listed every metric but the weakest."""
    from edgewise.explain.base import Explanation

    ex = alert_explanation(_rows(), 100, 100)
    for e in (ex, Explanation(ex.value, ex.base, ex.contributions)):
        with pytest.raises(InvalidParameterError, match=r"'k' parameter of Explanation.top "
                                                        r"must be an int in the range \[0, inf"):
            e.top(k)
    assert ex.top(0) == [] and len(ex.top(10)) == 3
