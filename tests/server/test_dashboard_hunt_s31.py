"""Dashboard bugs a hunt reproduced in headless Chromium (and one in the quality plot route).

* A device reporting once a minute drew an empty chart in the 15 min window: readings more
  than 18 s apart were all breaks of the line (now 3 times the series' own spacing breaks
  it, and a reading with a break on both sides is a dot).
* A verdict in flight had its buttons enabled again by the next poll, which rebuilt the
  rows: a second verdict went out (two POSTs, the second label kept).
* After the token was revoked, the page went on polling with it behind the login form.
* The quality plot's time axis was UTC, unnamed, beside charts in the browser's zone.
* An alert's explanation was kept per span until reload, a null one too: a late reading
  inside the span, or history enough at last, never showed.
* A quality plot was requested again at each poll while the first request was pending.

The browser tests install Playwright's clock and fast-forward it past POLL_MS (3 s) to
make a poll come at once.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import matplotlib.figure
import numpy as np
import pytest

from edgewise.store.base import Alert
from tests.quality.test_plot_time_zone import assert_reads_in, axis_reads
from tests.server.conftest import Env, build_env, serve_in_thread
from tests.server.test_dashboard_ui_browser import _settle

S = 10**9
POLL_MS = 3000  # app.js
LINE_RGB = (31, 111, 235)  # COLORS.line in app.js


@contextlib.contextmanager
def _served(tmp_path: Path, setup: Callable[[Env], Any]) -> Iterator[tuple[Env, str, Any]]:
    """A served app after ``setup(env)``; yields ``(env, base URL, what setup returned)``."""
    gen = build_env(tmp_path)
    env = next(gen)
    try:
        got = setup(env)
        with serve_in_thread(env.client.app) as port:
            yield env, f"http://127.0.0.1:{port}", got
    finally:
        gen.close()


def _page(chromium, base: str, token: str, path: str,
          before: Callable[[Any], None] | None = None, **context: Any) -> Any:
    """A page at ``path`` with ``token`` saved and Playwright's clock installed; ``before``
    (page) runs before it loads (to route requests), and the alerts page lists every alert."""
    ctx = chromium.new_context(**{"viewport": {"width": 1280, "height": 900}, **context})
    page = ctx.new_page()
    page.clock.install()
    page.goto(base + "/")
    page.evaluate("t => { localStorage.setItem('edgewise.token', t); "
                  "sessionStorage.setItem('edgewise.alerts.status', ''); }", token)
    if before:
        before(page)
    page.goto(base + path)
    page.reload()
    return page


def _three_metrics(env: Env) -> Alert:
    """pump-1: 5 min of temp_c/rpm/vib_mm_s 1 s apart (a temp_c rise, one rpm spike) and
    an open alert."""
    now = int(time.time())
    batch = [{"ts": now - 300 + i, "seq": i + 1,
              "metrics": {"temp_c": 40 + 2 * np.sin(i / 20) + (25 if 240 <= i < 246 else 0),
                          "rpm": 1450 + (i % 7) + (200 if i == 150 else 0),
                          "vib_mm_s": 2.0 + 0.01 * i}}
             for i in range(300)]
    assert env.send(batch).json()["accepted"] == 900
    return env.store.add_alert(Alert("pump-1", (now - 60) * S, (now - 54) * S, 0.99,
                                     drivers={"temp_c": 1.0}, message="temp spike"))


# ---------------------------------------------------------------- the chart's line
LINE_PIXELS = """([metric, lo, hi, [r, g]]) => {
  const c = document.querySelector(`canvas[data-metric="${metric}"]`);
  const {width, height} = c, pad = 56 * devicePixelRatio, pw = width - pad - 10 * devicePixelRatio;
  const px = c.getContext('2d').getImageData(0, 0, width, height).data;
  let n = 0;
  for (let x = Math.round(pad + lo * pw); x < pad + hi * pw; x++) {
    for (let y = 0; y < height; y++) {
      const i = 4 * (y * width + x);
      if (Math.abs(px[i] - r) < 60 && Math.abs(px[i + 1] - g) < 60 && px[i + 2] > 180) n++;
    }
  }
  return n;
}"""


@pytest.mark.browser
def test_a_reading_a_minute_draws_a_line_and_a_lone_reading_a_dot(
        chromium, tmp_path: Path) -> None:
    """Check the 15 min chart of a metric read once a minute has a line (it had 0 line
    pixels: every 60 s step was over the 18 s break), and a reading alone between two
    breaks is drawn as a dot (it was drawn as nothing)."""
    def setup(env: Env) -> None:
        now = int(time.time())
        slow = [(now - 870 + 60 * k, "slow") for k in range(15)]
        lone = [(now - 890 + 3 * k, "fast") for k in range(100)] + [(now - 400, "fast")] + [
            (now - 200 + 3 * k, "fast") for k in range(66)]
        rows = sorted(slow + lone)
        batch = [{"ts": ts, "seq": i + 1, "metrics": {m: 20.0 + (i % 5)}}
                 for i, (ts, m) in enumerate(rows)]
        assert env.send(batch).json()["accepted"] == len(batch)

    with _served(tmp_path, setup) as (env, base, _):
        page = _page(chromium, base, env.tokens["viewer"], "/#/device/pump-1?window=15m")
        page.wait_for_selector("canvas[data-metric='slow'][data-points='15']")
        page.wait_for_selector("canvas[data-metric='fast'][data-points]")
        assert page.get_attribute("canvas[data-metric='slow']", "data-window") == "900"
        slow = page.evaluate(LINE_PIXELS, ["slow", 0.0, 1.0, LINE_RGB[:2]])
        assert slow > 300, f"{slow} line pixels for 15 readings a minute apart"
        # the lone reading at 500 s of 900, 200 s from each neighbour: nothing else there
        lone = page.evaluate(LINE_PIXELS, ["fast", 0.45, 0.68, LINE_RGB[:2]])
        assert lone >= 9, f"{lone} pixels where a reading stands alone"
        assert page.get_attribute("canvas[data-metric='fast']", "data-dots") == "1"
        assert page.get_attribute("canvas[data-metric='slow']", "data-dots") == "0"
        page.context.close()


# ---------------------------------------------------------------- verdicts, revoked token
@pytest.mark.browser
def test_a_verdict_in_flight_stays_busy_through_a_poll_and_a_revoked_token_stops_polls(
        chromium, tmp_path: Path) -> None:
    """Check a row's buttons stay disabled (aria-busy) while its verdict is in flight, also
    after a poll redrew the rows (they came back enabled and a second verdict went out),
    and come back once it is answered; then that a revoked token ends the polling (the
    page polled with it every 3 s behind the login form)."""
    with _served(tmp_path, _three_metrics) as (env, base, alert):
        page = _page(chromium, base, env.tokens["operator"], "/#/alerts")
        row = f"tr[data-alert='{alert.id}']"
        page.wait_for_selector(f"{row} button[data-action='true_alarm']:enabled")
        held: list = []
        page.route(re.compile(r".*/v1/alerts/[^/?]+/(label|ack)$"), lambda r: held.append(r))
        page.click(f"{row} button[data-action='true_alarm']")
        _settle(page, lambda: len(held) == 1)
        page.evaluate(f"document.querySelector(\"{row}\").dataset.old = 'yes'")
        page.clock.fast_forward(POLL_MS + 100)  # a poll redraws the rows
        page.wait_for_selector(f"{row}:not([data-old])")
        for action in ("ack", "true_alarm", "false_alarm"):
            button = f"{row} button[data-action='{action}']"
            assert page.is_disabled(button), f"{action} enabled by a poll, verdict in flight"
            assert page.get_attribute(button, "aria-busy") == "true", action
        page.click(f"{row} button[data-action='false_alarm']", force=True, timeout=2000)
        page.wait_for_timeout(300)
        assert len(held) == 1, [r.request.url for r in held]
        held[0].continue_()
        page.wait_for_selector(
            f"{row}[data-label='true_alarm'] button[data-action='false_alarm']:enabled")
        assert page.get_attribute(f"{row} button[data-action='false_alarm']", "aria-busy") is None
        assert env.store.get_alert(alert.id).label == "true_alarm"

        env.security.revoke_token("test-operator")
        page.clock.fast_forward(POLL_MS + 100)
        page.wait_for_selector("#login:not(.hidden)")
        page.wait_for_timeout(300)
        calls: list[str] = []
        page.on("request", lambda r: calls.append(r.url) if "/v1/" in r.url else None)
        for _ in range(3):  # three polls' time
            page.clock.fast_forward(POLL_MS + 100)
            page.wait_for_timeout(200)
        assert calls == [], f"polled with the revoked token behind the login form: {calls}"
        page.context.close()


# ---------------------------------------------------------------- quality plots, explanations
@pytest.mark.browser
def test_quality_plot_in_the_pages_zone_asked_once_and_explanations_asked_again(
        chromium, tmp_path: Path) -> None:
    """Check the device page asks for a quality plot in its time zone (tz=Asia/Kolkata; it
    sent one offset, taken now, drawn an hour off across a DST change), and once while that
    request is pending (each poll asked again); and that
    an alert's explanation is asked again once expired: a null one (too little history then)
    stayed, and with it no explanation, until reload."""
    with _served(tmp_path, _three_metrics) as (env, base, alert):
        plots: list = []
        reports: list[str] = []
        explains: list[str] = []

        def explain(route) -> None:
            explains.append(route.request.url)
            if len(explains) == 1:  # not explainable yet
                route.fulfill(status=200, content_type="application/json", json={
                    "id": alert.id, "explanation": None, "explanation_detail": "too little"})
            else:
                route.continue_()

        def before(page) -> None:
            page.route(re.compile(r".*/quality/plots/.*"), lambda r: plots.append(r))
            page.route(re.compile(rf".*/v1/alerts/{alert.id}$"), explain)
            page.on("response", lambda r: reports.append(r.url) if "/quality?" in r.url else None)

        page = _page(chromium, base, env.tokens["viewer"], "/#/device/pump-1", before,
                     timezone_id="Asia/Kolkata")
        _settle(page, lambda: len(plots) >= 1 and len(explains) >= 1)
        seen = len(reports)
        page.clock.fast_forward(POLL_MS + 100)
        _settle(page, lambda: len(reports) > seen)
        page.wait_for_timeout(400)
        urls = [r.request.url for r in plots]
        # each metric's plot once while it is pending (each poll asked again). How many
        # metrics have a plot depends on the machine's pace: a live window ends now, and a
        # silence after the last reading longer than 3 spacings is a gap (CI: every metric)
        metrics = [re.search(r"/plots/([^/?]+)\.png", u).group(1) for u in urls]
        assert metrics[0] == "rpm" and len(metrics) == len(set(metrics)), (
            f"the pending plot asked again: {urls}")
        for url in urls:
            assert re.search(r"[?&]tz=Asia%2F(Kolkata|Calcutta)(&|$)", url), url
            assert "tz_offset_min" not in url, url
        plots[0].continue_()
        page.wait_for_selector(
            "#quality-plots figure[data-metric='rpm'] img[src^='data:image/png']")
        box = f"#device-alerts [data-explain-for='{alert.id}']"
        assert page.query_selector(f"{box} .bar-row") is None
        assert len(explains) == 1
        page.clock.fast_forward(31_000)  # the null answer has expired
        page.wait_for_selector(f"{box} .bar-row", timeout=5000)
        assert len(explains) == 2
        page.context.close()


@pytest.mark.browser
def test_quality_plot_falls_back_to_the_offset_where_the_server_knows_no_such_zone(
        chromium, tmp_path: Path) -> None:
    """Check a 422 on tz (a server whose time zone database lacks the browser's zone) makes
    the page ask again in its UTC offset now (tz_offset_min=330 in Asia/Kolkata) and show
    that plot, rather than none."""
    with _served(tmp_path, _three_metrics) as (env, base, _):
        urls: list[str] = []

        def plot(route) -> None:
            urls.append(route.request.url)
            if "tz=" in route.request.url:
                route.fulfill(status=422, content_type="application/problem+json", json={
                    "status": 422, "field": "tz", "reason": "invalid"})
            else:
                route.continue_()

        page = _page(chromium, base, env.tokens["viewer"], "/#/device/pump-1",
                     lambda page: page.route(re.compile(r".*/quality/plots/rpm\.png.*"), plot),
                     timezone_id="Asia/Kolkata")
        page.wait_for_selector(
            "#quality-plots figure[data-metric='rpm'] img[src^='data:image/png']")
        assert len(urls) == 2 and "tz=" in urls[0], urls
        assert "tz_offset_min=330" in urls[1] and "tz=" not in urls[1], urls
        page.context.close()


# ---------------------------------------------------------------- the plot's time axis
def test_quality_plot_draws_and_names_its_time_axis_in_the_offset_asked(
        env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    """Check GET …/quality/plots/{metric}.png?tz_offset_min=330 reads its axis 5 h 30 min
    after UTC and names it 'UTC+05:30' (without: 'UTC'): it drew UTC with no name beside
    the dashboard's local charts; an offset past 18 h is a 422."""
    t0 = 1_700_000_000
    batch = [{"ts": t0 + i, "seq": i + 1, "metrics": {"temp_c": 40.0 + (i % 3) / 10
                                                     + (30 if i == 40 else 0)}}
             for i in range(60)]
    assert env.send(batch).json()["accepted"] == 60
    drawn = _drawn(monkeypatch)
    q = env.client.get(f"/v1/devices/pump-1/quality?start={t0}&end={t0 + 60}",
                       headers=env.auth("viewer")).json()
    url = next(p["url"] for p in q["plots"] if p["metric"] == "temp_c")
    ts = (t0 + np.arange(60)) * S
    for extra, zone, reads_as in (("", "UTC", "UTC"),
                                  ("&tz_offset_min=330", "UTC+05:30", "Asia/Kolkata"),
                                  ("&tz_offset_min=-210", "UTC-03:30", "America/St_Johns")):
        r = env.client.get(url + extra, headers=env.auth("viewer"))
        assert r.status_code == 200, r.text
        assert drawn[-1].axes[0].get_xlabel() == f"time ({zone})", extra
        assert_reads_in(axis_reads(drawn[-1], ts), reads_as)  # St John's: -03:30 in November
    r = env.client.get(url + "&tz_offset_min=1500", headers=env.auth("viewer"))
    assert r.status_code == 422 and "tz_offset_min" in r.text, r.text


def _drawn(monkeypatch: pytest.MonkeyPatch) -> list[matplotlib.figure.Figure]:
    """The figures the plot route draws, drawn again for reading after it saved them."""
    drawn: list[matplotlib.figure.Figure] = []
    save = matplotlib.figure.Figure.savefig

    def savefig(fig, *args: Any, **kw: Any) -> Any:
        drawn.append(fig)
        return save(fig, *args, **kw)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", savefig)
    return drawn


@pytest.mark.parametrize(("zone", "t0", "offsets"), [
    ("Europe/Berlin", 1_711_843_200, "UTC+01:00/UTC+02:00"),      # 2024-03-31 00:00Z
    ("America/New_York", 1_710_046_800, "UTC-05:00/UTC-04:00"),   # 2024-03-10 05:00Z
])
def test_quality_plot_in_a_zone_reads_as_the_dashboard_across_a_dst_change(
        env: Env, monkeypatch: pytest.MonkeyPatch, zone: str, t0: int, offsets: str) -> None:
    """Check …/quality/plots/{metric}.png?tz=ZONE over 3 h across a DST change reads each
    tick at the zone's clock of its instant, as the dashboard's charts (the browser's local
    clock) do, and names the zone and both offsets: the dashboard sent one offset, taken
    now, and the readings on the other side of the change were drawn an hour off. A zone
    not known, or tz with tz_offset_min, is a 422 naming it."""
    step = 120
    batch = [{"ts": t0 + step * i, "seq": i + 1,
              "metrics": {"temp_c": 40.0 + (i % 3) / 10 + (30 if i == 50 else 0)}}
             for i in range(90)]
    assert env.send(batch).json()["accepted"] == 90
    drawn = _drawn(monkeypatch)
    q = env.client.get(f"/v1/devices/pump-1/quality?start={t0}&end={t0 + 90 * step}",
                       headers=env.auth("viewer")).json()
    url = next(p["url"] for p in q["plots"] if p["metric"] == "temp_c")
    r = env.client.get(url + "&tz=" + quote(zone, safe=""), headers=env.auth("viewer"))
    assert r.status_code == 200, r.text
    assert drawn[-1].axes[0].get_xlabel() == f"time ({zone}, {offsets})"
    assert_reads_in(axis_reads(drawn[-1], (t0 + step * np.arange(90)) * S), zone)
    for extra, field in (("&tz=Mars%2FOlympus", "tz"), (f"&tz={zone}&tz_offset_min=60",
                                                         "tz_offset_min")):
        r = env.client.get(url + extra, headers=env.auth("viewer"))
        assert r.status_code == 422 and r.json()["field"] == field, (extra, r.text)
