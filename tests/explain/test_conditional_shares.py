"""Which sensor drives a multivariate anomaly: shares of the conditional residuals.

The signed split of T² (``d_i (S⁻¹ d)_i``) gives a sensor frozen at its mean exactly 0, so
its healthy partners took the blame in ``Mahalanobis.explain_one`` (the gateway's alert
drivers) and in ``alert_explanation`` (the API's explanation). The ranking is now by
``(S⁻¹ d)_i² / (S⁻¹)_ii``; these tests check it on cases whose answer is known.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from edgewise.detect.mahalanobis import Mahalanobis
from edgewise.explain.alerts import alert_explanation
from edgewise.explain.linear import conditional_shares, quadratic_contributions

NAMES = ["flow", "speed", "current", "pressure"]


def _equicorrelated(n: int, rho: float) -> np.ndarray:
    return np.full((n, n), rho) + (1.0 - rho) * np.eye(n)


def _load_rows(rng: np.random.Generator, n: int) -> list[dict[str, float]]:
    """Four sensors that follow one load, each in its own units and offset."""
    out = []
    for _ in range(n):
        load = rng.normal()
        out.append({m: 10 * (k + 1) + (k + 1) * load + 0.1 * (k + 1) * rng.normal()
                    for k, m in enumerate(NAMES)})
    return out


def _trained(rows: list[dict[str, float]]) -> Mahalanobis:
    det = Mahalanobis()
    for r in rows:
        det.learn_one(r)
    return det


def _stuck(det: Mahalanobis, load: float = 3.0) -> dict[str, float]:
    """The load moved ``load`` sd: speed, current, pressure follow; flow stays at its mean."""
    row = {m: 10 * (k + 1) + (k + 1) * load for k, m in enumerate(NAMES)}
    row["flow"] = float(det.mean_[det.metrics_["flow"]])
    return row


# -- conditional_shares on known precision matrices ----------------------------------------
def test_independent_sensors_rank_as_the_t2_split() -> None:
    """Check a diagonal covariance gives c_i = d_i² / S_ii: the T² terms, normalised."""
    cov = np.diag([4.0, 0.25, 9.0])
    x, mean = np.array([3.0, 0.5, -4.0]), np.array([1.0, 0.0, 2.0])
    prec = np.linalg.inv(cov)
    shares = conditional_shares(x, mean, prec, names=list("abc"))
    d = x - mean
    expect = d * d / np.diag(cov)
    assert list(shares.values()) == pytest.approx((expect / expect.sum()).tolist(), rel=1e-12)
    terms = quadratic_contributions(x, mean, prec, names=list("abc")).contributions
    assert sorted(shares, key=shares.get) == sorted(terms, key=terms.get)


def test_a_sensor_spiking_alone_among_correlated_ones_leads() -> None:
    """Check one sensor 3 sd off while its correlated partners stay at their mean leads."""
    prec = np.linalg.inv(_equicorrelated(4, 0.9))
    shares = conditional_shares([0.0, 0.0, 3.0, 0.0], np.zeros(4), prec, names=NAMES)
    assert max(shares, key=shares.get) == "current" and shares["current"] > 0.5


def test_a_stuck_sensor_among_partners_moving_together_leads() -> None:
    """Check a sensor at its mean while its three partners move +3 sd together leads,
    where its T² term is exactly 0."""
    prec = np.linalg.inv(_equicorrelated(4, 0.9))
    x = np.array([0.0, 3.0, 3.0, 3.0])
    shares = conditional_shares(x, np.zeros(4), prec, names=NAMES)
    assert max(shares, key=shares.get) == "flow" and shares["flow"] > 0.5
    # by hand: flow's conditional residual given the others, in conditional sd
    rho, k = 0.9, 3
    pred = rho / (1 + (k - 1) * rho) * 9.0  # E[flow | others], equicorrelated
    var = 1 - k * rho * rho / (1 + (k - 1) * rho)
    w = prec @ x
    assert w[0] ** 2 / prec[0, 0] == pytest.approx(pred**2 / var, rel=1e-9)
    assert quadratic_contributions(x, np.zeros(4), prec).contributions["x0"] == 0.0


def test_shares_are_the_same_in_any_units_offsets_and_order() -> None:
    """Check rescaling, shifting and reordering the sensors leaves each one's share."""
    rng = np.random.default_rng(0)
    a = rng.normal(size=(4, 4))
    cov = a @ a.T + 0.5 * np.eye(4)
    x, mean = rng.normal(size=4) * 3, rng.normal(size=4)
    base = conditional_shares(x, mean, np.linalg.inv(cov), names=NAMES)
    scale, offset = np.array([1e-3, 7.0, 1e4, 0.2]), np.array([101325, -5, 0, 52.5])
    order = [2, 0, 3, 1]
    xs, ms = (x * scale + offset)[order], (mean * scale + offset)[order]
    covs = (cov * np.outer(scale, scale))[np.ix_(order, order)]
    moved = conditional_shares(xs, ms, np.linalg.inv(covs), names=[NAMES[i] for i in order])
    assert moved == pytest.approx(base, rel=1e-6, abs=1e-9)  # offsets cost a few digits


def test_shares_are_non_negative_sum_to_one_and_handle_non_finite() -> None:
    """Check the shares sum to 1, are 0 at the mean or for NaN, and go to the infinite."""
    rng = np.random.default_rng(1)
    prec = np.linalg.inv(_equicorrelated(3, 0.6))
    for _ in range(20):
        s = conditional_shares(rng.normal(size=3) * 4, np.zeros(3), prec)
        assert min(s.values()) >= 0.0 and math.fsum(s.values()) == pytest.approx(1.0)
    assert conditional_shares(np.ones(3), np.ones(3), prec) == {"x0": 0.0, "x1": 0.0, "x2": 0.0}
    assert set(conditional_shares([np.nan, 1.0, 0.0], np.zeros(3), prec).values()) == {0.0}
    # a sensor with a huge precision (constant before) that moved: it alone drives it
    s = conditional_shares([0.0, 1e200, 1.0], np.zeros(3), np.diag([1.0, 1e300, 1.0]))
    assert s == {"x0": 0.0, "x1": 1.0, "x2": 0.0}


# -- the gateway's Mahalanobis.explain_one -------------------------------------------------
@pytest.fixture(scope="module")
def load_rows() -> list[dict[str, float]]:
    return _load_rows(np.random.default_rng(3), 3000)


def test_explain_one_names_the_frozen_sensor(load_rows: list[dict[str, float]]) -> None:
    """Check a flow frozen at its mean while the load moves +3 sd leads the drivers
    (it had share 0.0 and speed/current/pressure took it all)."""
    det = _trained(load_rows)
    row = _stuck(det)
    assert det.score_one(row) == 1.0
    shares = det.explain_one(row)
    assert max(shares, key=shares.get) == "flow" and shares["flow"] > 0.5
    assert math.fsum(shares.values()) == pytest.approx(1.0)


def test_explain_one_names_the_frozen_sensor_with_a_partner_missing(
    load_rows: list[dict[str, float]],
) -> None:
    """Check a flow frozen at its mean while the load moves +3 sd still leads, alone, when
    current is missing from the reading (NaN or absent), which gets share 0 (imputed at its
    mean, current looked frozen too: the four shares were 0.24-0.26, flow's 0.245)."""
    det = _trained(load_rows)
    row = _stuck(det)
    for x in ({**row, "current": math.nan}, {k: v for k, v in row.items() if k != "current"}):
        assert det.score_one(x) == 1.0
        shares = det.explain_one(x)
        assert shares["current"] == 0.0
        assert max(shares, key=shares.get) == "flow" and shares["flow"] > 0.6
        assert math.fsum(shares.values()) == pytest.approx(1.0)


def test_explain_one_names_a_lone_spike(load_rows: list[dict[str, float]]) -> None:
    """Check a sensor jumping alone while the load stays put still leads."""
    det = _trained(load_rows)
    row = {m: float(det.mean_[i]) for m, i in det.metrics_.items()}
    row["current"] += 3 * 0.1 * 3  # 3 sd of current's noise about the load
    shares = det.explain_one(row)
    assert max(shares, key=shares.get) == "current" and shares["current"] > 0.5


def test_explain_one_is_the_same_in_any_units_offsets_and_order(
    load_rows: list[dict[str, float]],
) -> None:
    """Check a detector fed the readings in other units, offsets and metric order gives
    each metric the same share."""
    det = _trained(load_rows)
    base = det.explain_one(_stuck(det))
    scale = {"flow": 1e-3, "speed": 60.0, "current": 1e3, "pressure": 1e5}
    offset = {"flow": 0.0, "speed": -7.0, "current": 3.0, "pressure": 101325.0}
    order = ["pressure", "flow", "current", "speed"]

    def conv(r: dict[str, float]) -> dict[str, float]:
        return {m: r[m] * scale[m] + offset[m] for m in order}

    other = _trained([conv(r) for r in load_rows])
    moved = other.explain_one(conv(_stuck(det)))
    assert list(moved) == order
    assert moved == pytest.approx(base, rel=1e-4, abs=1e-9)


def test_explain_one_non_finite_cases_as_before() -> None:
    """Check the reading at the mean gives all 0 and a metric constant at 0 that moves
    (its terms overflow) takes the whole share, as before."""
    rng = np.random.default_rng(2)
    det = Mahalanobis(warmup=10)
    for _ in range(200):
        det.learn_one({"a": rng.normal(), "b": 0.0})
    assert set(det.explain_one({"a": float(det.mean_[0]), "b": 0.0}).values()) == {0.0}
    for moved in (1.0, 1e10, 1e200):
        shares = det.explain_one({"a": 0.3, "b": moved})
        assert shares["b"] == pytest.approx(1.0) and shares["a"] < 1e-12
    # a NaN or inf reading is left out: share 0 (the rest's shares still sum to 1)
    shares = det.explain_one({"a": 4.0, "b": math.inf})
    assert shares == {"a": 1.0, "b": 0.0}


def test_explain_one_leaves_a_metric_not_yet_warm_out(
    load_rows: list[dict[str, float]],
) -> None:
    """Check a metric added late (fewer than ``warmup`` readings, left out of the T²) gets
    share 0 and the others the shares of a detector that never saw it."""
    det, plain = _trained(load_rows), _trained(load_rows)
    rng = np.random.default_rng(9)
    for r in _load_rows(rng, 10):
        det.learn_one({**r, "temp": 60.0 + r["speed"] + rng.normal()})  # 10 < warmup
        plain.learn_one(r)
    row = _stuck(plain)
    shares = det.explain_one({**row, "temp": 90.0})
    assert shares["temp"] == 0.0
    assert {k: v for k, v in shares.items() if k != "temp"} == pytest.approx(
        plain.explain_one(row), rel=1e-9, abs=1e-12)


# -- the API's alert_explanation -------------------------------------------------------------
def test_alert_explanation_ranks_the_frozen_sensor_first(
    load_rows: list[dict[str, float]],
) -> None:
    """Check the explanation's ``top`` and ``shares`` name the frozen flow, while its
    signed T² terms still sum to the T² (the flow's term stays small)."""
    rows = [(m, t, v) for t, r in enumerate(load_rows) for m, v in r.items()]
    flow_mean = float(np.mean([r["flow"] for r in load_rows]))
    fault = {m: 10 * (k + 1) + (k + 1) * 3.0 for k, m in enumerate(NAMES)}
    fault["flow"] = flow_mean
    rows += [(m, 3000, v) for m, v in fault.items()]
    ex = alert_explanation(rows, 3000, 3000)
    assert ex.check()
    assert ex.top(1)[0][0] == "flow" and max(ex.shares, key=ex.shares.get) == "flow"
    assert ex.top(1)[0][1] == ex.contributions["flow"]
    assert ex.contributions["flow"] < max(ex.contributions.values())  # the T² term: small
    assert math.fsum(ex.shares.values()) == pytest.approx(1.0)
    assert ex.to_dict()["shares"] == ex.shares


def test_a_deviation_that_overflows_is_its_own_sensors_not_shared() -> None:
    """Check a reading whose deviation from its mean itself overflows (1e308 from -1e308)
    gets the shares of that deviation scaled down, led by its own sensor, without a
    RuntimeWarning: the subtraction warned (an error under pytest), and past it the
    infinite deviation split the blame equally with the partner that had not moved."""
    prec = np.linalg.inv(_equicorrelated(2, 0.8))
    want = conditional_shares([1.0, 0.0], np.zeros(2), prec)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = conditional_shares([1e308, 0.0], [-1e308, 0.0], prec)
    assert got == pytest.approx(want) and got["x0"] > got["x1"]
    # a reading that is itself not finite still has no shares, as NaN
    assert set(conditional_shares([math.inf, 0.0], np.zeros(2), prec).values()) == {0.0}
