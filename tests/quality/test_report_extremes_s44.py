"""The batch quality report on readings near the largest float (+-1.7e308), NaN and inf,
single values, constant series and huge time gaps: finite figures, no RuntimeWarning, and
the same spikes as the same series of ordinary magnitudes; its parameters that are no
number raise naming themselves."""

from __future__ import annotations

import math
import random
import warnings
from collections.abc import Callable

import numpy as np
import pytest

from edgewise.errors import QualityError
from edgewise.quality.drift import drift_measurable, drift_score
from edgewise.quality.gaps import completeness, find_gaps, timeliness
from edgewise.quality.limits import Limits, changes_too_fast, check_limits
from edgewise.quality.report import device_report, metric_issues
from edgewise.quality.resample import resample
from edgewise.quality.spikes import despike, hampel_mask, resolution
from edgewise.quality.stream import StreamCleaner
from edgewise.quality.stuck import stuck_runs
from edgewise.telemetry import Reading

S = 10**9
BIG = 1.7e308
TOP = 1.7976931348623157e308


def _series(seed: int) -> np.ndarray:
    """120 readings in -170..170: level shifts, noise of several sizes, 8 % stray values."""
    rnd = random.Random(seed)
    out, level, noise = [], rnd.uniform(-170, 170), 1.0
    for _ in range(120):
        r = rnd.random()
        if r < 0.03:
            level = rnd.uniform(-170, 170)
        if r < 0.05:
            noise = rnd.choice((0.1, 1.0, 5.0, 30.0))
        v = rnd.uniform(-170, 170) if rnd.random() < 0.08 else level + rnd.gauss(0, noise)
        out.append(min(170.0, max(-170.0, v)))
    return np.array(out)


def test_hampel_judges_readings_near_the_largest_float_as_the_series_scaled_down() -> None:
    """Check series scaled by 2**1016 (readings to 1.2e308, steps to 2.4e308: inf) are
    flagged as the same series by 2**10. Before, seed 143's -149.9 among 114..170 was no
    spike up there (its deviation and threshold both inf), and seed 142 had two spikes
    more (its huge steps were no noise)."""
    for seed in (142, 143, 0, 1, 2):
        v = _series(seed)
        small, huge = v * 2.0**10, v * 2.0**1016
        assert hampel_mask(huge, n_sigmas=5.0).tolist() == hampel_mask(
            small, n_sigmas=5.0).tolist(), seed
        t = np.arange(len(v)) * S
        assert (metric_issues(t, huge)["figures"]["spikes"]
                == metric_issues(t, small)["figures"]["spikes"])
        fixed = despike(huge, n_sigmas=5.0)
        assert np.isfinite(fixed).all()
        assert np.array_equal(fixed, despike(small, n_sigmas=5.0) * 2.0**1006)
    assert resolution(np.array([BIG, -BIG] * 5)) == 0.0  # a step past the largest float


def test_a_rate_past_the_largest_float_is_judged_exactly_and_without_warning() -> None:
    """Check a change from -1e308 to 1e308 (2e308: inf in float) is too fast at 1.5e308/s
    over 1 s and not over 2 s, with no RuntimeWarning; before, numpy's readings warned
    (overflow in subtract) and both were too fast. The stream cleaner judges it so too."""
    t = np.array([0, 2 * S, 3 * S])
    v = np.array([-1e308, 1e308, -1e308])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert check_limits(t, v, Limits(max_rate=1.5e308)) == {"out_of_range": [],
                                                                  "rate": [2]}
        assert changes_too_fast(0, -1e308, S, 1e308, 1.5e308)
        f = metric_issues(t, v, limits=Limits(max_rate=1.5e308))["figures"]
    assert f["rate"] == 1
    c = StreamCleaner(limits={"x": Limits(max_rate=1.5e308)})
    kept = c.clean([Reading("d", "x", int(ti), float(vi)) for ti, vi in zip(t, v, strict=True)])
    assert [r.value for r in kept] == [-1e308, 1e308] and dict(c.removed) == {"rate": 1}


def _rows(values: list[float], times: list[int], metric: str) -> list[dict]:
    return [{"device_id": "p1", "metric": metric, "ts_ns": t, "value": v}
            for t, v in zip(times, values, strict=True)]


def test_the_report_on_extreme_series_has_finite_figures_and_no_warning() -> None:
    """Check a device report over series of +-1.7e308 mixed with normal readings, NaN
    and inf, one reading, a constant extreme series, alternating extremes and a gap of
    31 years, with a rate limit, raises no RuntimeWarning and gives finite figures."""
    rnd = random.Random(4)
    normal = [20 + rnd.gauss(0, 1) for _ in range(60)]
    mixed = [rnd.choice((BIG, -BIG, TOP, -TOP, 1e308, math.nan, math.inf, 5e-324))
             if rnd.random() < 0.3 else x for x in normal]
    sec = [i * S for i in range(60)]
    rows = (_rows(mixed, sec, "mixed") + _rows([BIG], [0], "one")
            + _rows([-BIG] * 30, sec[:30], "flat")
            + _rows([BIG if i % 2 else -BIG for i in range(40)], sec[:40], "alternating")
            + _rows([1.0, 2.0, 3.0], [0, S, 10**18], "gap")
            + _rows([rnd.uniform(-TOP, TOP) for _ in range(60)], sec, "uniform"))
    limits = {m: Limits(max_rate=1.0) for m in ("mixed", "alternating", "uniform")}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rep = device_report(rows, limits=limits)
    for name, fig in rep["metrics"].items():
        for key, x in fig.items():
            assert not (isinstance(x, float) and not math.isfinite(x)), (name, key, x)
    assert rep["metrics"]["one"]["readings"] == 1
    assert rep["metrics"]["mixed"]["invalid"] >= 2  # NaN and inf at least


@pytest.mark.parametrize("call, name", [
    (lambda: find_gaps([0, S], every_ns=math.nan), "'every_ns' parameter of find_gaps"),
    (lambda: completeness([0, S], every_ns=math.inf), "'every_ns' parameter of completeness"),
    (lambda: timeliness([0, S], every_ns=-S), "'every_ns' parameter of timeliness"),
    (lambda: find_gaps([0, S], factor=math.nan), "'factor' parameter of find_gaps"),
    (lambda: timeliness([0, S], factor=-1.0), "'factor' parameter of timeliness"),
    (lambda: hampel_mask([1.0, 2.0, 3.0], min_scale=math.nan), "'min_scale' parameter"),
    (lambda: stuck_runs([1.0, 2.0, 3.0], tol=math.nan), "'tol' parameter of stuck"),
    (lambda: drift_score(np.arange(100.0), reference=10.5),
     "'reference' window of drift_score must be an int >= 0.*Got 10.5"),
    (lambda: drift_measurable(np.arange(100.0), recent=True), "'recent' window"),
    (lambda: resample([0, 30 * S], [0.0, 3.0], every_ns=10 * S, how="interpolate",
                      max_gap_ns=math.nan), "'max_gap_ns' parameter of resample"),
])
def test_parameters_that_are_no_number_raise_naming_themselves(
        call: Callable[[], object], name: str) -> None:
    """Check NaN, inf and negative spacings, factors, floors and tolerances raise naming
    the parameter and the value; before, NaN made no gap and a spacing of NaN or inf a
    whole series (completeness 1.0), a factor of -1 every instant a gap, a min_scale of
    NaN no spike, a tol of NaN no stuck run and a max_gap_ns of NaN bridged nothing,
    silently; a drift window of 10.5 failed in numpy ('slice indices must be integers')
    and True was a window of 1."""
    with pytest.raises(QualityError, match=name):
        call()
