"""A webhook body is JSON even for an alert whose score or driver share is NaN or
infinite (stored before the stores refused such numbers): it was sent as ``NaN`` /
``Infinity``, which strict receivers refuse as no JSON; now ``null``, as the API shows it."""

from __future__ import annotations

import json

import numpy as np

from edgewise.alerts import Alert
from edgewise.gateway.webhooks import alert_payload


def test_non_finite_numbers_are_null_in_the_body() -> None:
    """Check NaN and infinities become null, finite ones (numpy's too) stay, and the body
    passes a strict JSON encoder."""
    alert = Alert("pump-1", 0, 9, float("inf"), id="a1",
                  drivers={"t": float("nan"), "p": np.float32(0.25), "q": float("-inf")})
    body = alert_payload(alert)["alert"]
    assert body["score"] is None
    assert body["drivers"] == {"t": None, "p": 0.25, "q": None}
    json.dumps(alert_payload(alert), allow_nan=False)
