"""Duration settings have a finite upper bound (EDGEWISE_ALERT_WEBHOOK_TIMEOUT_S=1e10 was
taken, then every POST raised OverflowError in a thread's join; EDGEWISE_MAX_FUTURE_S=1e300
refused every reading), EDGEWISE_SEQ_GAP_GRACE_S is a checked setting (nan, inf and -5
were taken: with nan no seq gap was ever reported), and an empty EDGEWISE_* variable is
unset, as the CLI's options have it."""

from __future__ import annotations

import asyncio
import json
import math
import threading
import time
from pathlib import Path

import pytest

from edgewise import config
from edgewise.config import Settings
from edgewise.errors import ConfigError


def _refusal(var: str, value: str) -> str:
    with pytest.raises(ConfigError) as e:
        Settings.load(env={var: value})
    msg = str(e.value)
    assert "\n" not in msg
    return msg


@pytest.mark.parametrize("var", ["EDGEWISE_ALERT_WEBHOOK_TIMEOUT_S",
                                 "EDGEWISE_ALERT_WEBHOOK_POLL_S",
                                 "EDGEWISE_ALERT_WEBHOOK_RETRY_S",
                                 "EDGEWISE_ALERT_WEBHOOK_MAX_RETRY_S"])
@pytest.mark.parametrize("value", ["1e10", "86400.5", "inf"])
def test_webhook_waits_longer_than_a_day_are_refused(var: str, value: str) -> None:
    name = var.removeprefix("EDGEWISE_").lower()
    assert _refusal(var, value) == (
        f"Setting {name!r} ({var}) has value {value!r}. It must be a finite float in the "
        f"range (0, 86400].")
    assert config.MAX_WAIT_S < threading.TIMEOUT_MAX
    assert getattr(Settings.load(env={var: "86400"}), name) == 86400.0


def test_a_webhook_timeout_at_the_bound_posts(tmp_path: Path) -> None:
    """The largest timeout allowed still POSTs (1e10 raised OverflowError on every one)."""
    import http.server

    from edgewise.gateway.metrics import Metrics
    from edgewise.gateway.webhooks import Webhook
    from edgewise.store import open_store

    class Ok(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *a: object) -> None:
            pass

    s = Settings.load(env={"EDGEWISE_ALERT_WEBHOOK_TIMEOUT_S": "86400"})
    srv = http.server.HTTPServer(("127.0.0.1", 0), Ok)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    st = open_store("duckdb://:memory:")
    try:
        w = Webhook(f"http://127.0.0.1:{srv.server_port}/", st, b"k" * 16, Metrics(),
                    tmp_path, timeout_s=s.alert_webhook_timeout_s)
        assert w._post(b"{}", {})[0] == 200
    finally:
        srv.shutdown()
        st.close()


def test_max_future_s_is_finite_up_to_1e9_or_inf() -> None:
    msg = _refusal("EDGEWISE_MAX_FUTURE_S", "1e300")
    assert msg == ("Setting 'max_future_s' (EDGEWISE_MAX_FUTURE_S) has value '1e300'. It "
                   "must be a finite float in the range [0, 1e+09], or inf (no bound).")
    assert "or inf (no bound)" in _refusal("EDGEWISE_MAX_FUTURE_S", "-inf")
    assert Settings.load(env={"EDGEWISE_MAX_FUTURE_S": "inf"}).max_future_s == math.inf
    s = Settings.load(env={"EDGEWISE_MAX_FUTURE_S": "1e9"})
    from edgewise.telemetry import decode

    now = time.time()
    body = json.dumps({"ts": now, "metrics": {"t": 1.0}}).encode()
    assert len(decode(body, "p1", max_future_s=s.max_future_s).readings) == 1


@pytest.mark.parametrize(("value", "allowed"), [
    ("nan", "a finite float in the range [0, 86400]"),
    ("inf", "a finite float in the range [0, 86400]"),
    ("-5", "a finite float in the range [0, 86400]"),
    ("1e10", "a finite float in the range [0, 86400]"),
])
def test_seq_gap_grace_out_of_range_is_one_line(value: str, allowed: str) -> None:
    assert _refusal("EDGEWISE_SEQ_GAP_GRACE_S", value) == (
        f"Setting 'seq_gap_grace_s' (EDGEWISE_SEQ_GAP_GRACE_S) has value {value!r}. It "
        f"must be {allowed}.")


def test_seq_gap_grace_that_is_no_number_is_one_line() -> None:
    """A value that is no number names the range too, as one out of it does (README:
    "naming the setting, the value and the range"; it named no range)."""
    assert _refusal("EDGEWISE_SEQ_GAP_GRACE_S", "30s") == (
        "Setting 'seq_gap_grace_s' (EDGEWISE_SEQ_GAP_GRACE_S) has value '30s'. It must be a "
        "finite float in the range [0, 86400].")


@pytest.mark.parametrize(("key", "raw"), [
    ("EDGEWISE_ALERT_THRESHOLD", "abc"), ("EDGEWISE_MAX_PAYLOAD_BYTES", "1.5"),
    ("EDGEWISE_THROTTLE_AFTER_FAILURES", "x"), ("EDGEWISE_RATE_LIMIT_PER_S", "fast")])
def test_a_number_setting_that_is_no_number_names_its_range(key: str, raw: str) -> None:
    assert "in the range" in _refusal(key, raw), _refusal(key, raw)
    assert Settings.load(env={"EDGEWISE_SEQ_GAP_GRACE_S": "0"}).seq_gap_grace_s == 0.0


def test_seq_gap_grace_reaches_the_pipeline(tmp_path: Path) -> None:
    from edgewise.gateway.runtime import Gateway

    assert Settings().seq_gap_grace_s == 30.0  # the default, as before
    s = Settings.load(env={"EDGEWISE_SEQ_GAP_GRACE_S": "12.5"}, data_dir=tmp_path)
    gw = Gateway(s, detect_async=False)
    try:
        assert gw.pipeline.gap_grace_s == 12.5
    finally:
        asyncio.run(gw.stop())


def test_an_empty_variable_is_unset() -> None:
    s = Settings.load(env={"EDGEWISE_HOST": "", "EDGEWISE_HTTP_PORT": "",
                           "EDGEWISE_RATE_LIMIT_PER_S": "", "EDGEWISE_MQTT": "",
                           "EDGEWISE_FLEET_PRIOR": "", "EDGEWISE_SEQ_GAP_GRACE_S": ""})
    d = Settings()
    assert (s.host, s.http_port, s.rate_limit_per_s, s.mqtt, s.fleet_prior,
            s.seq_gap_grace_s) == (d.host, d.http_port, d.rate_limit_per_s, d.mqtt,
                                   d.fleet_prior, d.seq_gap_grace_s)
    # a blank one is a value, and refused as before
    assert "has value ' '" in _refusal("EDGEWISE_HTTP_PORT", " ")
