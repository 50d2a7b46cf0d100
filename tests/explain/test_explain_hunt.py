"""Explanation defects found by the explanations hunt: a metric constant before the alert,
a metric new in the alert, a sensor named ``age`` and duplicate feature names."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from edgewise.detect.mahalanobis import shrink_covariance
from edgewise.errors import InvalidParameterError
from edgewise.explain.alerts import alert_explanation
from edgewise.explain.base import Explanation
from edgewise.explain.linear import (
    linear_contributions,
    pca_contributions,
    quadratic_contributions,
)
from edgewise.explain.rul import by_sensor

S = 10**9


def _motor_rows(rpm_in_alert: float) -> list[tuple[str, int, float]]:
    """200 s of a pump's flow and temperature with its motor off (rpm 0), then one reading
    where the motor runs and flow and temperature sit at round values."""
    rng = np.random.default_rng(0)
    rows = []
    for i in range(200):
        rows += [("flow", i * S, 30 + rng.normal()), ("temp", i * S, 60 + rng.normal()),
                 ("rpm", i * S, 0.0)]
    rows += [("flow", 200 * S, 30.0), ("temp", 200 * S, 60.0), ("rpm", 200 * S, rpm_in_alert)]
    return rows


@pytest.mark.parametrize("rpm", [1500.0, 20000.0, 1e300])
def test_a_metric_constant_before_the_alert_gives_finite_sensible_terms(rpm: float) -> None:
    """Check a motor that was off and starts: its own term is large but finite, the metrics
    that did not move keep their exact terms (they were ~1e135 from pinv residues, and the
    whole T² inf once rpm passed ~1.3e4), and the terms sum to the value."""
    rows = _motor_rows(rpm)
    ex = alert_explanation(rows, 200 * S, 200 * S)
    assert all(map(math.isfinite, [ex.value, *ex.contributions.values()]))
    assert ex.check() and ex.top(1)[0][0] == "rpm" and ex.constant_before == ["rpm"]
    assert ex.value <= 1e13
    x = np.array([[v for m, t, v in rows if m == k and t < 200 * S] for k in ("flow", "temp")]).T
    mean = x.mean(0)
    s = shrink_covariance(np.cov(x, rowvar=False), mean, 0.01)
    d = np.array([30.0, 60.0]) - mean
    exact = d * np.linalg.solve(s, d)
    got = np.array([ex.contributions["flow"], ex.contributions["temp"]])
    assert np.allclose(got, exact, rtol=1e-6, atol=1e-9)


def test_a_metric_at_zero_throughout_contributes_nothing() -> None:
    """Check a metric that stays 0 (no scale at all) contributes exactly 0."""
    rows = [r for r in _motor_rows(0.0)]
    rows += [("flow", 201 * S, 45.0)]
    ex = alert_explanation(rows, 200 * S, 201 * S)
    assert ex.contributions["rpm"] == 0.0 and ex.constant_before == []
    assert ex.top(1)[0][0] == "flow" and ex.check()


@pytest.fixture
def env(tmp_path: Path) -> Iterator[object]:
    from tests.server.conftest import build_env

    gen = build_env(tmp_path)
    yield next(gen)
    gen.close()


def test_the_api_never_serves_null_for_a_number(env: object) -> None:
    """Check ``GET /v1/alerts/{id}`` of a motor that starts at 20000 rpm serves numbers
    (``value`` and ``rpm`` were ``null``: inf has no JSON) and names the constant metric."""
    from edgewise.store.base import Alert
    from edgewise.telemetry import Reading

    t0 = 1_700_000_000 * S
    rng = np.random.default_rng(1)
    readings = []
    for i in range(300):
        readings += [Reading(env.device, "flow", t0 + i * S, float(10 + rng.normal())),
                     Reading(env.device, "temp", t0 + i * S, float(40 + rng.normal())),
                     Reading(env.device, "rpm", t0 + i * S, 0.0 if i < 295 else 20000.0)]
    env.store.append(readings)
    alert = env.store.add_alert(Alert(env.device, t0 + 295 * S, t0 + 299 * S, 0.99,
                                      drivers={"rpm": 1.0}))
    r = env.client.get(f"/v1/alerts/{alert.id}", headers=env.auth("viewer"))
    assert r.status_code == 200, r.text
    ex = r.json()["explanation"]
    assert ex is not None
    numbers = [ex["value"], *ex["contributions"].values(), *(t["value"] for t in ex["top"])]
    assert all(isinstance(v, float | int) and math.isfinite(v) for v in numbers)
    assert ex["top"][0]["name"] == "rpm" and ex["constant_before"] == ["rpm"]
    assert abs(sum(ex["contributions"].values()) - ex["value"]) <= 1e-6 * ex["value"]


def test_a_metric_new_in_the_alert_is_left_out_and_named() -> None:
    """Check a metric the device starts sending in the alert no longer blocks the
    explanation with "0 complete reading times": it is left out and named."""
    rng = np.random.default_rng(0)
    rows = []
    for i in range(200):
        rows += [("flow", i * S, 30 + rng.normal()), ("temp", i * S, 60 + rng.normal())]
    rows += [("flow", 200 * S, 45.0), ("temp", 200 * S, 60.0), ("vibration", 200 * S, 3.0)]
    ex = alert_explanation(rows, 200 * S, 200 * S)
    assert ex.left_out == ["vibration"] and set(ex.contributions) == {"flow", "temp"}
    assert ex.top(1)[0][0] == "flow" and ex.reference_rows == 200 and ex.check()
    # with only one metric left with history, the error names the new one
    one = [r for r in rows if r[0] != "temp"]
    with pytest.raises(InvalidParameterError, match="'vibration' has no reading before"):
        alert_explanation(one, 200 * S, 200 * S)


def test_a_metric_with_short_history_is_named() -> None:
    """Check too little complete history names the metric that cuts it short."""
    rng = np.random.default_rng(0)
    rows = []
    for i in range(200):
        rows += [("flow", i * S, 30 + rng.normal()), ("temp", i * S, 60 + rng.normal())]
        if i >= 195:
            rows.append(("vibration", i * S, float(rng.normal())))
    rows += [("flow", 200 * S, 45.0), ("temp", 200 * S, 60.0), ("vibration", 200 * S, 3.0)]
    with pytest.raises(InvalidParameterError,
                       match=r"5 complete reading times .*'vibration' has fewer than 20"):
        alert_explanation(rows, 200 * S, 200 * S)


def test_by_sensor_keeps_a_sensor_named_age_apart_from_the_unit_age() -> None:
    """Check a sensor named ``age`` does not absorb the unit-age window feature (1.668 +
    2.55 was reported as 4.218)."""
    e = Explanation(10.0, 2.0, {"age_mean": 1.0, "age_last": 0.668, "temp_mean": 1.782,
                                "temp_slope": 2.0, "age": 2.55})
    folded = by_sensor(e)
    assert folded.contributions == pytest.approx(
        {"age": 1.668, "temp": 3.782, "unit age": 2.55})
    assert folded.check()
    # without a sensor named age, the unit age keeps its name
    plain = by_sensor(Explanation(3.0, 0.0, {"temp_mean": 1.0, "age": 2.0}))
    assert plain.contributions == {"temp": 1.0, "age": 2.0}


def test_duplicate_feature_names_are_refused() -> None:
    """Check duplicate names are refused (one contribution was silently lost and check()
    failed)."""
    with pytest.raises(InvalidParameterError, match=r"distinct.*\['t'\]"):
        linear_contributions([1.0, 2.0], 0.0, [1.0, 1.0], names=["t", "t"])
    with pytest.raises(InvalidParameterError, match="distinct"):
        quadratic_contributions([1.0, 1.0], [0.0, 0.0], np.eye(2), names=["t", "t"])
    with pytest.raises(InvalidParameterError, match="distinct"):
        pca_contributions([1.0, 1.0], [0.0, 0.0], [[1.0, 0.0]], names=["t", "t"])
    assert linear_contributions([1.0, 2.0], 0.0, [1.0, 1.0], names=["t", "u"]).check()


def _offset_rows(metrics: dict[str, tuple[float, float]],
                 shift: dict[str, float]) -> list[tuple[str, int, float]]:
    """300 s of readings around each metric's ``(level, sd)``, then one reading where the
    metrics in ``shift`` moved by that much."""
    rng = np.random.default_rng(0)
    rows = []
    for t in range(300):
        rows += [(m, t * S, lv + sd * rng.normal()) for m, (lv, sd) in metrics.items()]
    rows += [(m, 300 * S, lv + shift.get(m, 0.0) + sd * rng.normal())
             for m, (lv, sd) in metrics.items()]
    return rows


def test_a_precise_metric_with_a_large_offset_is_not_floored() -> None:
    """Check a stationary GPS latitude (52.52 ± 5e-7°) that moves 1e-4° (200 sd) ranks
    first, far above a temperature that moved 6 sd, and is not called constant (its sd was
    floored at a millionth of 52.52: lat fell to 3.6 below temp's 46)."""
    rows = _offset_rows({"lat": (52.52, 5e-7), "lon": (13.405, 5e-7), "temp_c": (20, 0.5)},
                        {"lat": 1e-4, "temp_c": 3.0})
    ex = alert_explanation(rows, 300 * S, 300 * S)
    assert ex.top(1)[0][0] == "lat" and ex.constant_before == [] and ex.check()
    assert ex.contributions["lat"] > 1e4 > 100 > ex.contributions["temp_c"]


@pytest.mark.parametrize("level", [0.0, 101325.0, 1e9])
def test_the_floor_does_not_depend_on_the_level(level: float) -> None:
    """Check the same metric (sd 0.02, moving 1 = 50 sd) gives the same explanation at any
    offset, and is never named constant."""
    rows = _offset_rows({"p": (level, 0.02), "temp_c": (20, 0.5)}, {"p": 1.0, "temp_c": 3.0})
    ex = alert_explanation(rows, 300 * S, 300 * S)
    assert ex.top(1)[0][0] == "p" and ex.constant_before == []
    assert ex.contributions["p"] == pytest.approx(2370, rel=0.05)
