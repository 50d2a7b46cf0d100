"""Settings given as values (``Settings.load(retention_days=...)``, an embedding program's
or a test's keywords, ``setting_value``) are checked as their text is: ``int()`` cut a
fraction off without a word (0.5 days of retention became 0, which keeps everything) and
took ``True`` for 1; a refusal named a flag no command has (``--fleet_prior``)."""

from __future__ import annotations

import pytest

from edgewise.config import Settings, setting_value
from edgewise.errors import ConfigError


@pytest.mark.parametrize(("name", "value", "where"), [
    ("retention_days", 0.5, "EDGEWISE_RETENTION_DAYS"),
    ("http_port", 8080.7, "EDGEWISE_HTTP_PORT, --port"),
    ("throttle_after_failures", 2.9, "EDGEWISE_THROTTLE_AFTER_FAILURES"),
    ("http_port", True, "EDGEWISE_HTTP_PORT, --port"),
    ("alert_threshold", True, "EDGEWISE_ALERT_THRESHOLD"),
    ("max_metrics_per_device", float("inf"), "EDGEWISE_MAX_METRICS_PER_DEVICE"),
])
def test_a_number_of_the_wrong_kind_is_refused_not_cut(name: str, value: object,
                                                       where: str) -> None:
    """Check a fractional value of an int setting, and a bool of a number setting, are
    refused in one line naming the setting, its variable (and flag), the value and the
    range, by Settings.load and setting_value alike."""
    for load in (lambda: Settings.load(env={}, **{name: value}),
                 lambda: setting_value(name, value)):
        with pytest.raises(ConfigError) as err:
            load()
        msg = str(err.value)
        assert f"Setting {name!r} ({where}) has value {value!r}. It must be" in msg, msg


def test_whole_numbers_given_as_values_still_load() -> None:
    """Check ints, whole floats and text keep loading as before."""
    s = Settings.load(env={}, http_port=9000.0, retention_days=7, rate_limit_per_s=5,
                      alert_threshold=0.5, mqtt_port="1885")
    assert (s.http_port, s.retention_days, s.rate_limit_per_s, s.alert_threshold,
            s.mqtt_port) == (9000, 7, 5.0, 0.5, 1885)
    assert isinstance(s.http_port, int) and isinstance(s.rate_limit_per_s, float)


def test_a_bad_keyword_is_named_as_the_setting_not_a_made_up_flag() -> None:
    """Check a bool setting given a value it cannot take names the setting, its variable
    and its real flag (--fleet-prior), never '--fleet_prior'."""
    with pytest.raises(ConfigError) as err:
        Settings.load(env={}, fleet_prior=0.5)
    msg = str(err.value)
    assert "--fleet_prior" not in msg
    assert msg.startswith("Setting 'fleet_prior' (EDGEWISE_FLEET_PRIOR, --fleet-prior) has "
                          "value 0.5."), msg


def test_a_data_dir_given_as_no_text_is_one_line() -> None:
    """Check a data_dir keyword that is no path is refused naming it (it raised
    KeyError: 'Path' from the message's own lookup)."""
    with pytest.raises(ConfigError, match=r"^Setting 'data_dir' \(EDGEWISE_DATA_DIR\) has "
                                          r"value 5\. Not a valid path"):
        Settings.load(env={}, data_dir=5)
