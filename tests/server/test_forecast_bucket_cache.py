"""A bucketed forecast (more than MAX_READINGS readings) is served from the cache until a
reading falls in a bucket after the fitted one's last."""

from __future__ import annotations

import time

import pytest

from edgewise.server.routes import forecast as route
from tests.server.conftest import Env
from tests.server.test_forecast_route import DAYS, HOUR, _get, _send_hourly, fits  # noqa: F401

BUCKET = 3 * HOUR  # 240 hourly readings kept within 100: 3 h buckets


@pytest.mark.parametrize("shift_h", [0, 2])
def test_bucketed_forecast_is_reused_until_a_reading_in_a_later_bucket(
        env: Env, fits: list[int], shift_h: int,  # noqa: F811
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Check that a second request with no new reading is answered from the cache (with
    the last reading 2 h into its 3 h bucket every request refitted: the cache took the
    bucket's start for its time and that reading for a new one), that a reading in the last
    bucket still does not refit, and that one in the next bucket does."""
    monkeypatch.setattr(route, "MAX_READINGS", 100)
    start = (int(time.time()) // BUCKET - 8) * BUCKET  # the last bucket's start
    end = _send_hourly(env, "load_kw", DAYS, end_s=start + shift_h * HOUR)
    first = _get(env, metric="load_kw", horizon=4).json()
    assert first["history"]["bucket_s"] == BUCKET and first["cached"] is False, first
    second = _get(env, metric="load_kw", horizon=4).json()
    assert (second["cached"], fits) == (True, [4]), second
    if shift_h == 0:  # a reading later in the same bucket is no new step
        assert env.send({"ts": end + HOUR, "seq": 10_000,
                         "metrics": {"load_kw": 20.0}}).status_code == 200
        assert _get(env, metric="load_kw", horizon=4).json()["cached"] is True
    assert env.send({"ts": start + BUCKET, "seq": 10_001,
                     "metrics": {"load_kw": 20.0}}).status_code == 200
    third = _get(env, metric="load_kw", horizon=4).json()
    assert (third["cached"], fits) == (False, [4, 4]), third
