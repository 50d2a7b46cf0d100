"""Forecasts of metrics of very small values (session 48's hunt)."""

from __future__ import annotations

import numpy as np
import pytest

from edgewise.errors import QualityError
from edgewise.models.forecast import Forecaster

STEP = 8 * 3600 * 10**9  # a 3-step cycle is a daily one
START = 1_700_000_000 * 10**9
N = 150


def _cycle() -> tuple[np.ndarray, np.ndarray]:
    k = np.arange(N)
    return START + k * STEP, np.array([1.0, 3.0, 2.0])[k % 3] + 0.01 * np.sin(k)


@pytest.mark.parametrize("scale", [2.0**-1000, 2.0**-700])
def test_tiny_values_keep_their_cycle(scale: float) -> None:
    """Check values around 1e-301 (or 1e-211) with a 3-step cycle are forecast as
    the same cycle in their units: exactly the forecast of the values near 1, scaled (their
    squares underflowed to 0: no season was found and the forecast was flat at the mean)."""
    ts, y = _cycle()
    kw = {"horizon": 6, "n_estimators": 20}
    one = Forecaster(**kw).fit(ts, y)
    tiny = Forecaster(**kw).fit(ts, y * scale)
    assert tiny.season_ == one.season_ == 3
    a, b = one.predict(), tiny.predict()
    for col in ("forecast", "low", "high"):
        np.testing.assert_array_equal(b[col].to_numpy(), a[col].to_numpy() * scale)
    # a history given to predict is taken in the same units
    given = tiny.predict(ts, y * scale)
    np.testing.assert_array_equal(given["forecast"].to_numpy(), b["forecast"].to_numpy())
    assert tiny.header()["training_data_sha256"] != one.header()["training_data_sha256"]


def test_tiny_model_refuses_a_history_in_other_units() -> None:
    """Check a model fitted on values around 1e-301 refuses to forecast from values near 1
    (they would overflow in its units) with a message naming both magnitudes."""
    ts, y = _cycle()
    tiny = Forecaster(horizon=3, n_estimators=5).fit(ts, y * 2.0**-1000)
    with pytest.raises(QualityError, match=r"magnitude about 3\.7\d*e-301.*magnitude 3\.0"):
        tiny.predict(ts, y)
