"""Alert explanations found wrong by the attribution hunt (session 45): a metric constant
before the alert at a non-zero level (a barometer at 101325 Pa, a setpoint) that ticks by
a hair in the alert took all the blame, whatever the size of its move, while the detector
that raised the alert gave it none."""

from __future__ import annotations

import numpy as np
import pytest

from edgewise.detect import Mahalanobis
from edgewise.explain.alerts import alert_explanation

N = 300


def _rows_and_detector() -> tuple[list[tuple[str, int, float]], Mahalanobis]:
    """300 readings of flow and temp (temp = 2 flow + noise) and a barometer constant at
    101325 Pa, as stored rows and learned by the gateway's detector."""
    rng = np.random.default_rng(0)
    rows: list[tuple[str, int, float]] = []
    det = Mahalanobis()
    for t in range(N):
        a = rng.normal()
        r = {"flow": a, "temp": 2 * a + 0.1 * rng.normal(), "baro": 101325.0}
        det.learn_one(r)
        rows += [(m, t, v) for m, v in r.items()]
    return rows, det


@pytest.mark.parametrize("tick", [1e-6, 1.0])
def test_a_still_metric_that_ticks_does_not_take_the_blame(tick: float) -> None:
    """Check the relationship flow/temp breaks while the barometer ticks by ``tick`` Pa (at
    most 1e-5 of its level): the explanation names flow and temp, as the detector that
    raised the alert does (``explain_one``: baro 0), and baro's term is small. It was
    named first with a share of 1.0 and a term of 1e12, for a tick of 1e-6 Pa as for 1 Pa."""
    rows, det = _rows_and_detector()
    x = {"flow": 1.0, "temp": -2.0, "baro": 101325.0 + tick}
    ex = alert_explanation(rows + [(m, N, v) for m, v in x.items()], N, N)
    shares = det.explain_one(x)
    assert det.score_one(x) == 1.0 and shares["baro"] < 1e-3
    assert ex.top(2)[0][0] in ("flow", "temp") and ex.top(2)[1][0] in ("flow", "temp")
    assert ex.shares["baro"] < 1e-3 and abs(ex.contributions["baro"]) < 1.0
    assert ex.check() and ex.constant_before == ["baro"]


def test_a_still_metric_that_moves_far_still_leads() -> None:
    """Check a metric constant at a non-zero level that moves far (a motor held at 1450 rpm
    that stops) still leads with a large finite term, larger for a larger move."""
    rng = np.random.default_rng(1)
    rows: list[tuple[str, int, float]] = []
    for t in range(200):
        rows += [("flow", t, 30 + rng.normal()), ("temp", t, 60 + rng.normal()),
                 ("rpm", t, 1450.0)]
    terms = []
    for rpm in (1400.0, 0.0):
        ex = alert_explanation([*rows, ("flow", 200, 30.0), ("temp", 200, 60.0),
                                ("rpm", 200, rpm)], 200, 200)
        assert ex.top(1)[0][0] == "rpm" and ex.shares["rpm"] > 0.99
        assert ex.constant_before == ["rpm"] and ex.check()
        terms.append(ex.contributions["rpm"])
    assert 1e3 < terms[0] < terms[1] < 1e13
