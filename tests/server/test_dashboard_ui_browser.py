"""The dashboard's behaviour in a real headless Chromium: gateway outages, the fleet summary,
narrow screens, the time axis, alert marks, the chart window, alert explanations.

Uses the ``live`` and ``shared_live`` fixtures of test_dashboard_browser (pump-1 with 5 min of
temp_c/rpm/vib_mm_s and an open temp_c alert; pump-2 registered and silent): a test that
only looks uses the module's ``shared_live``, one that changes what is served its own
``live``. A test that waits for the 3 s poll installs Playwright's clock and fast-forwards
it past POLL_MS to make the poll come at once.
"""

from __future__ import annotations

import math
import os
import re
import time
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from edgewise.store.base import Alert
from tests.server.test_dashboard_browser import (  # noqa: F401 (fixtures)
    _wait_for,
    live,
    shared_live,
)

pytestmark = pytest.mark.browser

WINDOWS = {"15m": 900, "1h": 3600, "6h": 21600, "24h": 86400, "7d": 604800}
# round steps for a time axis, in seconds
ALIASES = {"Asia/Kolkata": ("Asia/Calcutta",)}
TIME_STEPS = {1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600,
              43200, 86400, 172800, 604800}
POLL_MS = 3000  # app.js
FLEET_POLL = re.compile(r"/v1/fleet$")
ALERTS_POLL = re.compile(r"/v1/alerts\?")
DEVICE_POLL = re.compile(r"/v1/devices/[^/]+/readings\?start=")


def _page(chromium, base: str, token: str, path: str = "/#/fleet", *, clock: bool = False,
          **context):
    """A page loaded at ``path`` with ``token`` saved, in its own context (viewport, zone);
    with ``clock``, Playwright's clock installed (time runs as usual until fast-forwarded:
    :func:`_poll_now`)."""
    ctx = chromium.new_context(**{"viewport": {"width": 1280, "height": 900}, **context})
    page = ctx.new_page()
    if clock:
        page.clock.install()
    page.goto(base + "/")
    page.evaluate("t => localStorage.setItem('edgewise.token', t)", token)
    page.goto(base + path)
    page.reload()
    return page


def _settle(page, check, timeout: float = 10.0) -> None:
    """Wait for ``check()`` while letting Playwright deliver events (route handlers)."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        page.wait_for_timeout(100)


def _poll_now(page, url: re.Pattern[str], timeout: float = 10.0):
    """Fast-forward the page's clock (``_page(..., clock=True)``) past POLL_MS and return the
    request to ``url`` that the poll due then sends. A poll still running sets its timer
    only once done: while no request comes the clock is moved on again (5 times at most;
    then the poll comes POLL_MS later by itself), within ``timeout`` (s) in all."""
    sent: list = []

    def seen(request) -> None:
        if url.search(request.url):
            sent.append(request)

    page.on("request", seen)
    try:
        deadline = time.monotonic() + timeout
        pushed, last = 0, 0.0
        while not sent:
            assert time.monotonic() < deadline, f"no poll to {url.pattern} in {timeout} s"
            if pushed < 5 and time.monotonic() - last > 0.2:
                page.clock.fast_forward(POLL_MS)
                pushed, last = pushed + 1, time.monotonic()
            page.wait_for_timeout(20)
    finally:
        page.remove_listener("request", seen)
    return sent[0]


def _poll_drawn(page, url: re.Pattern[str]) -> None:
    """Make a poll come now (:func:`_poll_now`) and wait until it has been drawn: the poll
    after it, also made to come now, is timed only once the one before is done."""
    _poll_now(page, url).response()  # answered (None: it failed)
    _poll_now(page, url)


def _shot(page, name: str) -> None:
    if os.environ.get("EDGEWISE_SCREENSHOT_DIR"):  # to look at it
        page.screenshot(path=os.path.join(os.environ["EDGEWISE_SCREENSHOT_DIR"], name),
                        full_page=True)


def test_saved_token_survives_a_failing_gateway_at_load(chromium, shared_live) -> None:  # noqa: F811
    """Check a 503 (then a network error) from /v1/me at page load keeps the saved token, says
    the gateway is unreachable, and the page comes up by itself once /v1/me answers."""
    env, base, _ = shared_live
    page = _page(chromium, base, env.tokens["viewer"], clock=True)
    calls: list[str] = []

    def me(route) -> None:
        calls.append(route.request.url)
        if len(calls) == 1:
            route.fulfill(status=503, content_type="application/problem+json",
                          body='{"title": "Service Unavailable", "status": 503}')
        elif len(calls) == 2:
            route.abort("connectionrefused")
        else:
            route.continue_()

    page.route("**/v1/me", me)
    page.reload()  # the saved token is checked again
    page.wait_for_selector("#flash, #login:not(.hidden)")
    assert page.evaluate("localStorage.getItem('edgewise.token')") == env.tokens["viewer"]
    assert page.is_hidden("#login")
    assert "retrying" in page.inner_text("#flash")
    assert len(calls) == 1, calls
    page.clock.fast_forward(POLL_MS)  # the retry, timed with the flash, comes now
    page.wait_for_selector("#flash:has-text('Gateway unreachable, retrying')", timeout=8000)
    assert len(calls) == 2, calls
    assert page.evaluate("localStorage.getItem('edgewise.token')") == env.tokens["viewer"]
    page.clock.fast_forward(POLL_MS)
    page.wait_for_selector("tr[data-device='pump-1']", timeout=10000)  # retried by itself
    assert page.query_selector("#flash") is None
    assert page.inner_text("#who") == "test-viewer (viewer)"
    # a 401 still drops it
    page.unroute("**/v1/me")
    page.evaluate("localStorage.setItem('edgewise.token', 'ew_wrong')")
    page.reload()
    page.wait_for_selector("#login-error:has-text('not valid')")
    assert page.evaluate("localStorage.getItem('edgewise.token')") is None
    page.context.close()


def test_failed_poll_message_clears_when_the_gateway_is_back(chromium, shared_live) -> None:  # noqa: F811
    """Check a poll that cannot reach the gateway says so, and the next good poll clears it."""
    env, base, _ = shared_live
    page = _page(chromium, base, env.tokens["viewer"], clock=True)
    page.wait_for_selector("tr[data-device='pump-1']")
    page.route("**/v1/fleet", lambda route: route.abort("connectionrefused"))
    _poll_now(page, FLEET_POLL)
    flash = page.wait_for_selector("#flash", timeout=8000)
    assert flash.inner_text() == "Gateway unreachable, retrying…"
    page.unroute("**/v1/fleet")
    _poll_now(page, FLEET_POLL)
    page.wait_for_selector("#flash", state="detached", timeout=8000)
    assert page.query_selector("tr[data-device='pump-1']") is not None
    page.context.close()


def test_fleet_summary_counts_silent_devices(chromium, live) -> None:  # noqa: F811
    """Check the summary has a Silent card (pump-2 never sent anything), the health cards add
    up to the device count, and the silent badge has a style of its own."""
    env, base, _ = live
    env.security.add_device("pump-9")  # a second silent one
    page = _page(chromium, base, env.tokens["viewer"])
    page.wait_for_selector("tr[data-device='pump-2']")
    card = page.wait_for_selector(".summary [data-kind='silent']")
    assert card.inner_text().split() == ["2", "Silent"]
    counts = {c.get_attribute("data-kind"): int(c.get_attribute("data-count"))
              for c in page.query_selector_all(".summary [data-kind]")}
    assert counts["devices"] == 3
    assert counts["ok"] + counts["alerting"] + counts["stale"] + counts["silent"] == 3
    assert (counts["alerting"], counts["silent"]) == (1, 2)
    style = page.evaluate("""() => {
        const css = (el) => {
            const s = getComputedStyle(el);
            return [s.backgroundColor, s.color];
        };
        const plain = document.createElement('span'); plain.className = 'badge';
        document.body.append(plain);
        const silent = document.querySelector("tr[data-device='pump-2'] .badge");
        return { silent: css(silent), plain: css(plain) };
    }""")
    assert style["silent"] != style["plain"], style
    page.context.close()


def test_pages_fit_a_375px_screen(chromium, shared_live) -> None:  # noqa: F811
    """Check the fleet, device and alerts pages fit a 375 px wide phone with no horizontal
    scroll of the page; wide tables scroll inside their own box."""
    env, base, alert = shared_live
    page = _page(chromium, base, env.tokens["operator"], viewport={"width": 375, "height": 740},
                 device_scale_factor=2, is_mobile=True, has_touch=True)
    width = "() => [document.documentElement.scrollWidth, document.body.scrollWidth, innerWidth]"
    page.wait_for_selector("tr[data-device='pump-1']")
    sw, bw, iw = page.evaluate(width)
    _shot(page, "narrow-fleet.png")
    assert iw == 375 and sw <= iw and bw <= iw, ("fleet", sw, bw, iw)

    page.goto(base + "/#/device/pump-1")
    canvas = page.wait_for_selector("canvas[data-metric='temp_c'][data-points]")
    _wait_for(lambda: int(canvas.get_attribute("data-points") or 0) >= 20)
    page.wait_for_selector("#device-quality tr[data-metric='temp_c']")
    page.wait_for_selector(f"#device-alerts tr[data-alert='{alert.id}']")
    page.wait_for_selector("#device-rul[data-rul]")
    sw, bw, iw = page.evaluate(width)
    _shot(page, "narrow-device.png")
    assert sw <= iw and bw <= iw, ("device", sw, bw, iw)
    box = canvas.bounding_box()
    assert box["x"] >= 0 and box["x"] + box["width"] <= iw, box
    # the canvas is drawn at its shown size: labels are not squeezed
    assert abs(canvas.evaluate("c => c.width / c.clientWidth") - 2) < 0.01

    page.goto(base + "/#/alerts")
    page.wait_for_selector(f"tr[data-alert='{alert.id}']")
    sw, bw, iw = page.evaluate(width)
    _shot(page, "narrow-alerts.png")
    assert sw <= iw and bw <= iw, ("alerts", sw, bw, iw)
    # the table is wider than the screen and scrolls in its box; its buttons stay reachable
    wrap = page.evaluate("""() => {
        const t = document.querySelector('#alert-rows').closest('table');
        const box = t.parentElement;
        return [t.scrollWidth, box.clientWidth, getComputedStyle(box).overflowX]; }""")
    assert wrap[0] > wrap[1] and wrap[2] == "auto", wrap
    page.context.close()


def _local(t: float, zone: ZoneInfo) -> datetime:
    return datetime.fromtimestamp(t, zone)


@pytest.mark.parametrize("zone_name", ["Asia/Kolkata"])  # +05:30: local != UTC alignment
def test_time_axis_ticks_on_round_local_times(chromium, shared_live, zone_name: str) -> None:  # noqa: F811
    """Check the device charts' time ticks fall on round times of the local clock for every
    window (a step of 1/2/5/10/15/30 s or min, 1/2/3/6/12 h or days; midnights for days),
    are labelled to the precision of the step, and the page names the time zone; the alert
    table's times are local too."""
    env, base, alert = shared_live
    zone = ZoneInfo(zone_name)
    page = _page(chromium, base, env.tokens["viewer"], timezone_id=zone_name)
    for label, seconds in WINDOWS.items():
        page.goto(f"{base}/#/device/pump-1?window={label}")
        canvas = page.wait_for_selector(
            f"canvas[data-metric='temp_c'][data-window='{seconds}'][data-ticks]", timeout=10000)
        step = int(canvas.get_attribute("data-tick-step"))
        ticks = [float(t) for t in canvas.get_attribute("data-ticks").split(",")]
        labels = canvas.get_attribute("data-tick-labels").split("|")
        assert step in TIME_STEPS, (label, step)
        assert 3 <= len(ticks) <= 12, (label, step, ticks)
        assert ticks == sorted(set(ticks)), ticks
        for t, text in zip(ticks, labels, strict=True):
            local = _local(t, zone)
            of_day = local.hour * 3600 + local.minute * 60 + local.second
            if step < 86400:
                assert of_day % step == 0, (label, step, local)
            else:
                assert of_day == 0, (label, step, local)
            if of_day == 0 and step >= 3600:
                assert text == f"{local:%b} {local.day}", (label, text, local)
            elif step < 60:
                assert text == f"{local:%H:%M:%S}", (label, text, local)
            else:
                assert text == f"{local:%H:%M}", (label, text, local)
        _shot(page, f"ticks-{label}.png")
    offset = datetime.now(zone).strftime("%z")  # "+0530"
    names = {zone_name, *ALIASES.get(zone_name, ())}  # Chromium's ICU may name it by an alias
    for where in ("#device-tz", "footer"):
        text = page.inner_text(where)
        assert any(n in text for n in names) and f"UTC{offset[:3]}:{offset[3:]}" in text, text
    cell = page.wait_for_selector(f"#device-alerts tr[data-alert='{alert.id}'] td")
    start = _local(alert.start_ns / 1e9, zone)
    assert cell.inner_text().splitlines()[0] == f"{start:%Y-%m-%d %H:%M:%S}"
    assert any(n in page.inner_text("table:has(#device-alerts) thead") for n in names)
    page.context.close()


def test_device_window_is_kept_and_drawn_at_once(chromium, shared_live) -> None:  # noqa: F811
    """Check a new chart window is fetched at once (not at the next 3 s poll), is put in the
    URL, and is still chosen after a reload and on the next device page opened."""
    env, base, _ = shared_live
    page = _page(chromium, base, env.tokens["viewer"], "/#/device/pump-1", clock=True)
    page.wait_for_selector("canvas[data-metric='temp_c'][data-points]")

    def span(req) -> float | None:
        m = re.search(r"/readings\?start=([\d.]+)&end=([\d.]+)", req.url)
        return float(m.group(2)) - float(m.group(1)) if m else None

    def readings(seconds: int | None = None):
        def match(req) -> bool:
            got = span(req)
            return got is not None and (seconds is None or abs(got - seconds) < 1)
        return match

    assert abs(span(_poll_now(page, DEVICE_POLL)) - 900) < 1
    # a poll has just started: the next one is 3 s away
    t = time.monotonic()
    with page.expect_request(readings(3600), timeout=2000):
        page.select_option("#window", "3600")
    assert time.monotonic() - t < 2
    assert page.evaluate("location.hash") == "#/device/pump-1?window=1h"
    with page.expect_request(readings(), timeout=8000) as first:
        page.reload()
    assert abs(span(first.value) - 3600) < 1
    assert page.input_value("#window") == "3600"
    page.wait_for_selector("canvas[data-metric='temp_c'][data-window='3600']")
    page.goto(base + "/#/fleet")
    page.wait_for_selector("tr[data-device='pump-1']")
    with page.expect_request(readings(), timeout=8000) as first:
        page.goto(base + "/#/device/pump-1")  # no window in the URL: the saved one
    assert abs(span(first.value) - 3600) < 1
    assert page.input_value("#window") == "3600"
    page.context.close()


MARK_PIXELS = """c => {  // pixels of the red reading marks (#cf222e) in the plot area
    const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
    let n = 0;
    for (let i = 0; i < d.length; i += 4) {
        if (d[i] > 170 && d[i + 1] < 80 && d[i + 2] < 90) n++;
    }
    return n;
}"""


def test_alert_marks_only_on_driving_metrics_and_open_alerts(chromium, live) -> None:  # noqa: F811
    """Check an alert is shaded only on metrics with a real share of its drivers (not on one
    with a 0 or 3 % share; on one with 4.69 %, which the alerts table shows as 5 %), and
    readings are marked red only inside open alerts."""
    env, base, alert = live
    now = int(time.time())
    # acknowledged, on rpm only: shaded on rpm, but no red marks
    acked = env.store.add_alert(Alert("pump-1", (now - 200) * 10**9, (now - 170) * 10**9, 0.9,
                                      drivers={"rpm": 1.0}, message="rpm"))
    env.store.update_alert(acked.id, status="acknowledged", acked_by="test")
    # open, nearly all temp_c: vib_mm_s (3 %) and rpm (0) are not shaded
    env.store.add_alert(Alert("pump-1", (now - 120) * 10**9, (now - 110) * 10**9, 0.95,
                              drivers={"temp_c": 0.97, "vib_mm_s": 0.03, "rpm": 0.0}))
    # the pipeline's own alert on pump-1's spike counts too (temp_c 95 %, vib_mm_s 4.69 %,
    # which the alerts table lists as 5 %: shaded, and marked, as it is open)
    def share(a: Alert, m: str) -> float:
        total = sum(max(0.0, v) for v in a.drivers.values())
        return 1.0 if not total else max(0.0, a.drivers.get(m, 0.0)) / total
    expected = {m: sum(math.floor(100 * share(a, m) + 0.5) >= 5  # as the table rounds
                       for a in env.store.list_alerts("pump-1"))
                for m in ("temp_c", "rpm", "vib_mm_s")}
    assert expected["rpm"] == 1 and expected["vib_mm_s"] == 1 and expected["temp_c"] >= 2
    page = _page(chromium, base, env.tokens["viewer"], "/#/device/pump-1")
    spans = {}
    for m in ("temp_c", "rpm", "vib_mm_s"):
        c = page.wait_for_selector(f"canvas[data-metric='{m}'][data-points]")
        _wait_for(lambda c=c: int(c.get_attribute("data-points") or 0) >= 20)
        spans[m] = int(c.get_attribute("data-spans"))
    assert spans == expected, spans
    marks = {m: page.eval_on_selector(f"canvas[data-metric='{m}']", MARK_PIXELS)
             for m in ("temp_c", "rpm", "vib_mm_s")}
    _shot(page, "marks.png")
    assert marks["temp_c"] > 20, marks
    assert marks["rpm"] == 0 and marks["vib_mm_s"] > 0, marks
    assert env.store.get_alert(alert.id).status == "open"
    page.context.close()


def test_alert_explanations_are_fetched_once(chromium, shared_live) -> None:  # noqa: F811
    """Check a slow GET /v1/alerts/{id} is not started again by the polls that come while it
    runs, and its bars show once it answers."""
    env, base, alert = shared_live
    page = _page(chromium, base, env.tokens["viewer"], clock=True)
    page.wait_for_selector("tr[data-device='pump-1']")
    held = []

    def one_alert(url: str) -> bool:
        return bool(re.search(r"/v1/alerts/[^/?]+$", url))

    released = []

    def hold(route) -> None:  # not answered until released below
        if released:
            route.continue_()
        else:
            held.append(route)

    page.route(one_alert, hold)
    page.goto(base + "/#/alerts")
    page.wait_for_selector(f"tr[data-alert='{alert.id}']")
    _settle(page, lambda: len(held) >= 1)
    _poll_drawn(page, ALERTS_POLL)  # two more polls, the first drawn
    _poll_drawn(page, ALERTS_POLL)  # and the second
    ids = [r.request.url.rsplit("/", 1)[1] for r in held]
    anomalies = {a.id for a in env.store.list_alerts(status="open") if a.kind == "anomaly"}
    # one after another, each once: the first is held, so the polls since start none again
    assert alert.id in anomalies and ids and len(set(ids)) == len(ids), ids
    assert set(ids) <= anomalies, ids
    released.append(True)
    for r in held:
        r.continue_()
    page.wait_for_selector(f"[data-explain-for='{alert.id}'] .bar-row", timeout=8000)
    for other in anomalies:  # the rest follow
        page.wait_for_selector(f"[data-explain-for='{other}'] .bar-row", timeout=8000)
    page.context.close()


def test_a_verdict_in_flight_disables_its_row_so_a_second_click_sends_nothing(
        chromium, live) -> None:  # noqa: F811
    """Check 'False alarm' on a slow link disables the row's buttons until the answer: the
    buttons stayed enabled for seconds and a second click sent a second verdict."""
    env, base, alert = live
    page = _page(chromium, base, env.tokens["operator"], "/#/alerts")
    row = f"tr[data-alert='{alert.id}']"
    page.wait_for_selector(row)
    held, posts = [], []

    def hold(route) -> None:
        posts.append(route.request.url)
        held.append(route)

    page.route(re.compile(r".*/v1/alerts/[^/]+/label$"), hold)
    button = page.locator(f"{row} button[data-action='false_alarm']")
    button.click()
    _settle(page, lambda: len(held) == 1)
    assert button.is_disabled()
    button.click(force=True, timeout=2000)  # a disabled button takes no click
    page.wait_for_timeout(500)
    assert len(posts) == 1
    held[0].continue_()
    _settle(page, lambda: env.store.get_alert(alert.id).label == "false_alarm")
    page.context.close()


def test_a_64_character_metric_name_wraps_in_its_chart_card(chromium, live) -> None:  # noqa: F811
    """Check the longest metric name allowed (64 characters, one word) wraps inside its
    chart card on a 390 px screen: the heading ran 967 px into the next card and the page
    scrolled sideways (986 px)."""
    env, base, _ = live
    long = "M" * 64
    sent = env.send({"ts": int(time.time()) - 30, "metrics": {long: 1.0}, "seq": 301})
    assert sent.json()["accepted"] == 1, sent.text
    page = _page(chromium, base, env.tokens["viewer"], "/#/device/pump-1",
                 viewport={"width": 390, "height": 740})
    page.wait_for_selector(f"canvas[data-metric='{long}']")
    sw, iw = page.evaluate("() => [document.documentElement.scrollWidth, innerWidth]")
    assert sw <= iw, (sw, iw)
    over = page.evaluate("""() => [...document.querySelectorAll('.chart h3')].filter(
        h => h.scrollWidth > h.parentElement.clientWidth).length""")
    assert over == 0
    page.context.close()


def test_download_csv_saves_every_reading_of_the_window_shown(chromium, shared_live) -> None:  # noqa: F811
    """"Download CSV" on the device page saves the window on screen as the readings.csv
    route writes it: every reading (300 per metric, not the chart's buckets), a column per
    metric; a viewer may; a refusal is said on the page, not swallowed."""
    env, base, _ = shared_live
    page = _page(chromium, base, env.tokens["viewer"], "/#/device/pump-1?window=15m")
    page.wait_for_selector("canvas[data-metric='temp_c']")
    _settle(page, lambda: "points" in page.inner_text("#device-info"))
    with page.expect_download() as info:
        page.click("#download-csv")
    download = info.value
    assert re.fullmatch(r"pump-1_\d{8}T\d{6}Z\.csv", download.suggested_filename)
    lines = open(download.path(), encoding="utf-8").read().splitlines()
    assert lines[0] == "time,rpm,temp_c,vib_mm_s"
    assert len(lines) == 1 + 300
    assert lines[1].startswith(time.strftime("%Y-%m-%dT", time.gmtime(time.time() - 300))[:8])

    # the token was revoked meanwhile: the refusal is flashed, the button usable again
    def refuse(route) -> None:
        route.fulfill(status=403, content_type="application/problem+json",
                      body='{"title": "Forbidden", "detail": "token revoked"}')

    page.route("**/readings.csv*", refuse)
    page.click("#download-csv")
    page.wait_for_selector("#flash[data-source='csv']")
    assert "CSV download refused: token revoked" in page.inner_text("#flash")
    assert page.is_enabled("#download-csv")
    page.context.close()
