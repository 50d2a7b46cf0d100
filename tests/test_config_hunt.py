"""M1: numeric settings are range-checked at load, NaN never passes (it switched the rate
limit and the future-time bound off)."""

from __future__ import annotations

import pytest

from edgewise.config import Settings
from edgewise.errors import ConfigError

#: max_future_s: a finite clock skew up to 1e9 s, or none (inf)
FUTURE = "a finite float in the range [0, 1e+09], or inf (no bound)"


@pytest.mark.parametrize(("var", "value", "allowed"), [
    ("EDGEWISE_RATE_LIMIT_PER_S", "nan", "a finite float in the range [1e-06, inf)"),
    ("EDGEWISE_RATE_LIMIT_PER_S", "0", "a finite float in the range [1e-06, inf)"),
    ("EDGEWISE_RATE_LIMIT_BURST", "nan", "a finite float in the range [1, inf)"),
    ("EDGEWISE_RATE_LIMIT_BURST", "inf", "a finite float in the range [1, inf)"),
    ("EDGEWISE_MAX_FUTURE_S", "nan", FUTURE),
    ("EDGEWISE_MAX_FUTURE_S", "-86400", FUTURE),
    ("EDGEWISE_HTTP_PORT", "-5", "an int in the range [1, 65535]"),
    ("EDGEWISE_MQTT_PORT", "99999", "an int in the range [1, 65535]"),
    ("EDGEWISE_MAX_BODY_BYTES", "0", "an int in the range [1, 1073741824]"),
    ("EDGEWISE_MAX_PAYLOAD_BYTES", "-1", "an int in the range [1, 1073741824]"),
    ("EDGEWISE_THROTTLE_AFTER_FAILURES", "0", "an int in the range [1, inf)"),
    ("EDGEWISE_RETENTION_DAYS", "-1", "an int in the range [0, inf)"),
    ("EDGEWISE_ALERT_THRESHOLD", "nan", "a finite float in the range (0, 1]"),
    ("EDGEWISE_ALERT_THRESHOLD", "1.5", "a finite float in the range (0, 1]"),
    ("EDGEWISE_FAST_STREAM_Z", "inf", "a finite float in the range [0, inf)"),
])
def test_out_of_range_settings_are_one_line_errors(var: str, value: str, allowed: str) -> None:
    name = var.removeprefix("EDGEWISE_").lower()
    with pytest.raises(ConfigError) as e:
        Settings.load(env={var: value})
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith(f"Setting {name!r} ({var}")
    assert f"has value {value!r}. It must be {allowed}." in msg


def test_flags_are_checked_too_and_good_values_pass() -> None:
    with pytest.raises(ConfigError, match=r"'http_port' \(EDGEWISE_HTTP_PORT, --port\) has "
                                          r"value 0\. It must be an int in the range \[1, 65535\]"):
        Settings.load(env={}, http_port=0)
    s = Settings.load(env={"EDGEWISE_MAX_FUTURE_S": "inf", "EDGEWISE_RATE_LIMIT_PER_S": "1e9",
                           "EDGEWISE_RATE_LIMIT_BURST": "1e9", "EDGEWISE_ALERT_THRESHOLD": "1",
                           "EDGEWISE_FAST_STREAM_Z": "0"}, mqtt_port=65535)
    assert s.max_future_s == float("inf") and s.mqtt_port == 65535
    Settings().check()  # the defaults are in range
