"""ConformalBands keeps the whole finite-sample correction (too few residuals: unbounded,
never the largest residual) and refuses a non-finite prediction or truth by its index."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edgewise.errors import InvalidParameterError
from edgewise.models.conformal import ConformalBands, min_residuals


def _coverage(n_cal: int, reps: int, **params: float) -> float:
    """Mean share of 200 exchangeable test points inside bands fitted on ``n_cal``."""
    rng = np.random.default_rng(0)
    cover = []
    for _ in range(reps):
        p = rng.uniform(0, 100, n_cal + 200)
        y = p + rng.normal(0, 5, n_cal + 200)
        lo, hi = ConformalBands(**params).fit(p[:n_cal], y[:n_cal]).interval(p[n_cal:])
        cover.append(np.mean((y[n_cal:] >= lo) & (y[n_cal:] <= hi)))
    return float(np.mean(cover))


@pytest.mark.parametrize("n_cal", [5, 10, 15, 19, 25])
def test_few_residuals_still_cover_one_minus_alpha(n_cal: int) -> None:
    """Check 90% bands from few residuals hold the truth at least 90% of the time. The
    correction was clipped to [min, max] of the residuals below 19 of them: 0.67 with 5,
    0.82 with 10."""
    assert _coverage(n_cal, reps=300, alpha=0.1) >= 0.89


def test_below_the_minimum_the_bounds_are_infinite_and_at_it_finite() -> None:
    """Check 18 residuals at alpha 0.1 give (-inf, inf) and 19 the smallest and largest."""
    assert min_residuals(0.1) == 19
    r = np.arange(19.0)
    low, high = ConformalBands(alpha=0.1).fit(np.zeros(18), r[:18]).interval(np.zeros(1))
    assert (low[0], high[0]) == (-math.inf, math.inf)
    low, high = ConformalBands(alpha=0.1).fit(np.zeros(19), r).interval(np.zeros(1))
    assert (low[0], high[0]) == (0.0, 18.0)


def test_small_neighbourhoods_hold_enough_residuals_for_a_finite_band() -> None:
    """Check neighbourhoods asked smaller than a finite band needs (share 0.005,
    min_neighbours 10 of 2000) take 19 residuals: finite bands that cover about 90%
    (10 residuals gave [min, max], which covered about 0.82)."""
    bands = ConformalBands(alpha=0.1, share=0.005, min_neighbours=10)
    rng = np.random.default_rng(1)
    p = rng.uniform(0, 100, 3000)
    y = p + rng.normal(0, 5, 3000)
    low, high = bands.fit(p[:2000], y[:2000]).interval(p[2000:])
    assert bands.k_ == 19 and np.isfinite(low).all() and np.isfinite(high).all()
    assert np.mean((y[2000:] >= low) & (y[2000:] <= high)) >= 0.87


@pytest.mark.parametrize(("which", "field"), [("y", "truth"), ("pred", "prediction")])
def test_a_non_finite_value_is_refused_by_its_index(which: str, field: str) -> None:
    """Check a NaN truth or an inf prediction is refused naming which and where (a NaN truth
    made every upper bound NaN)."""
    rng = np.random.default_rng(0)
    pred = rng.uniform(0, 100, 100)
    y = pred + rng.normal(0, 5, 100)
    if which == "y":
        y[[21, 40]] = np.nan
        words = r"truth 21 is nan \(2 of 100 not finite\)"
    else:
        pred[7] = np.inf
        words = r"prediction 7 is inf \(1 of 100 not finite\)"
    with pytest.raises(InvalidParameterError, match=words) as err:
        ConformalBands().fit(pred, y)
    assert err.value.field == field


def _sorted_windows(prediction: np.ndarray, y: np.ndarray,
                    bands: ConformalBands) -> tuple[np.ndarray, np.ndarray]:
    """The bands' table the plain way (the old fit): sort every neighbourhood's residuals."""
    order = np.argsort(prediction, kind="stable")
    resid = (y - prediction)[order]
    k, a = bands.k_, bands.alpha
    k_hi = math.ceil((k + 1) * (1 - a / 2) - 1e-9) - 1
    k_lo = math.floor((k + 1) * (a / 2) + 1e-9) - 1
    rows = [np.sort(resid[s:s + k]) for s in range(len(resid) - k + 1)]
    return (np.array([r[k_lo] if k_lo >= 0 else -math.inf for r in rows]),
            np.array([r[k_hi] if k_hi < k else math.inf for r in rows]))


def test_the_band_table_is_the_sorted_neighbourhoods_own_bit_for_bit() -> None:
    """Check the O(n log n) table equals, bit for bit, the quantiles of each neighbourhood
    sorted on its own (the old O(n k log k) fit: 4.6 s at 40,000 residuals, 25 s at
    100,000), with ties in predictions and residuals, several alphas and too few residuals;
    and that 100,000 residuals fit in well under a second."""
    import time

    rng = np.random.default_rng(1)
    for trial in range(60):
        n = int(rng.integers(1, 300))
        p = rng.uniform(0, 125, n)
        y = p + rng.normal(0, 5, n)
        if trial % 3 == 1:
            p, y = np.minimum(np.round(p / 10) * 10, 60.0), np.round(y)  # ties, a cap
        bands = ConformalBands(alpha=float(rng.choice([0.1, 0.2, 0.05, 0.5, 0.01])),
                               share=float(rng.uniform(0.01, 1)),
                               min_neighbours=int(rng.integers(1, 80))).fit(p, y)
        low, high = _sorted_windows(p, y, bands)
        assert np.array_equal(bands.low_, low) and np.array_equal(bands.high_, high), trial
    p = rng.uniform(0, 125, 100_000)
    start = time.perf_counter()
    ConformalBands().fit(p, p + rng.normal(0, 5, 100_000))
    assert time.perf_counter() - start < 2.0


def test_min_residuals_is_found_at_once_and_as_counting_up_finds_it() -> None:
    """Check min_residuals equals the first n that passes, counted up from 1, for 3,000
    alphas, returns at once for alpha=1e-8 (counting took 32 s) and refuses an alpha out of
    (0, 1) by name (0 looped for ever)."""
    import time

    def counted(alpha: float) -> int:
        n = 1
        while (math.ceil((n + 1) * (1 - alpha / 2) - 1e-9) > n
               or math.floor((n + 1) * (alpha / 2) + 1e-9) < 1):
            n += 1
        return n

    rng = np.random.default_rng(0)
    alphas = [*rng.uniform(2e-3, 1, 1500), *(2 / m for m in range(3, 1500)), 0.1, 0.05]
    assert [min_residuals(float(a)) for a in alphas] == [counted(float(a)) for a in alphas]
    start = time.perf_counter()
    assert min_residuals(1e-8) == 199_999_999
    assert time.perf_counter() - start < 0.1
    for bad in (0.0, 1.0, -0.1, math.nan):
        with pytest.raises(InvalidParameterError, match="min_residuals needs alpha"):
            min_residuals(bad)
