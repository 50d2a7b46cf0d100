"""Dashboard hunt (s46) in a real headless Chromium.

* /docs behind a proxy's path prefix (nginx ``location /edgewise/ { proxy_pass
  http://gateway:8080/; }``) was a blank page: fastapi-offline's page asked Swagger UI's
  files and the spec from the server's root (``/static-offline-docs/...``,
  ``/openapi.json``: the proxy's 404s), and "Try it out" sent ``/v1/...`` there too. They
  are now asked relative to the page.
* A poll whose answer never came (a gateway that hangs: a store lock held, a frozen
  process, a proxy waiting on it) left the page showing its last data as if live, with no
  word: the next poll waits for this one. The page now says the gateway has not answered
  for so long and since when the data shown dates.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.server.conftest import Env, build_env, serve_in_thread
from tests.server.test_dashboard_browser import (  # noqa: F401 (fixtures)
    live,
    shared_live,
)
from tests.server.test_dashboard_prefix_browser import PREFIX, _behind_prefix
from tests.server.test_dashboard_ui_browser import FLEET_POLL, _page, _poll_now, _settle

pytestmark = pytest.mark.browser


# ---------------------------------------------------------------- /docs behind a prefix
@pytest.fixture
def docs_behind_prefix(data_dir: Path) -> Iterator[tuple[str, list[str]]]:
    """The app behind a proxy that serves it under ``PREFIX``; what was asked outside it."""
    gen = build_env(data_dir)
    env = next(gen)
    outside: list[str] = []
    with serve_in_thread(_behind_prefix(env.client.app, outside)) as port:
        yield f"http://127.0.0.1:{port}{PREFIX}", outside
    gen.close()


def test_docs_work_under_a_path_prefix_try_it_out_too(chromium, docs_behind_prefix) -> None:
    """Check /docs at ``/edgewise/docs`` draws the API's operations and "Try it out" on
    ``GET /v1/me`` asks ``/edgewise/v1/me`` (answered 401: no token given), nothing being
    asked outside the prefix. It was blank: its CSS, script and spec were asked from the
    server's root, the proxy's 404s (and with them found, "Try it out" asked ``/v1/me``)."""
    base, outside = docs_behind_prefix
    page = chromium.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(base + "/docs")
    page.wait_for_selector(".swagger-ui .opblock", timeout=20_000)
    assert page.locator(".opblock").count() > 20
    op = "[id$='v1_me_get']"
    page.click(f"{op} .opblock-summary")
    page.click(f"{op} .try-out__btn")
    with page.expect_response(re.compile(r"/v1/me$")) as got:
        page.click(f"{op} .execute")
    assert got.value.url == base + "/v1/me" and got.value.status == 401
    assert outside == [] and errors == []
    page.close()


def test_docs_without_a_prefix_still_try_out_at_the_root(chromium, shared_live) -> None:  # noqa: F811
    """Check /docs served at the root draws and "Try it out" asks ``/v1/me`` there."""
    _, base, _ = shared_live
    page = chromium.new_page()
    page.goto(base + "/docs")
    page.wait_for_selector(".swagger-ui .opblock", timeout=20_000)
    op = "[id$='v1_me_get']"
    page.click(f"{op} .opblock-summary")
    page.click(f"{op} .try-out__btn")
    with page.expect_response(re.compile(r"/v1/me$")) as got:
        page.click(f"{op} .execute")
    assert got.value.url == base + "/v1/me" and got.value.status == 401
    page.close()


# ---------------------------------------------------------------- a gateway that hangs
def test_a_poll_left_unanswered_is_said_and_cleared_once_answered(chromium, shared_live) -> None:  # noqa: F811
    """Check the fleet page, its /v1/fleet poll held unanswered, says within 15 s that the
    gateway has not answered (it kept showing the old table as if live, silently), and that
    the message goes once the answer comes."""
    env, base, _ = shared_live
    page = _page(chromium, base, env.tokens["viewer"], clock=True)
    page.wait_for_selector("tr[data-device='pump-1']")
    held: list = []
    page.route("**/v1/fleet", lambda route: held.append(route))
    _poll_now(page, FLEET_POLL)
    page.clock.run_for(16_000)
    flash = page.wait_for_selector("#flash[data-source='poll']", timeout=8000)
    text = flash.inner_text()
    assert re.fullmatch(r"The gateway has not answered for 1\d s; the data shown is from "
                        r"\d\d:\d\d:\d\d\. Waiting…", text), text
    assert page.query_selector("tr[data-device='pump-1']") is not None  # still shown
    for route in held:
        route.continue_()
    page.unroute("**/v1/fleet")
    page.wait_for_selector("#flash", state="detached", timeout=8000)
    page.context.close()


# ---------------------------------------------------------------- value axis labels
@pytest.fixture
def counters(data_dir: Path) -> Iterator[tuple[Env, str]]:
    """pump-1 with 2 min of a byte counter near 1.2e11 and a level near -9.9e7."""
    gen = build_env(data_dir)
    env = next(gen)
    now = int(time.time())
    batch = [{"ts": now - 120 + i, "seq": i + 1,
              "metrics": {"bytes_total": 123456789012 + 1000 * i, "level": -98765432.5 - i / 4,
                          "temp_c": 40 + (i % 5) / 10}} for i in range(120)]
    assert env.send(batch).json()["accepted"] == 360
    with serve_in_thread(env.client.app) as port:
        yield env, f"http://127.0.0.1:{port}"
    gen.close()


def test_value_labels_of_large_numbers_are_drawn_whole(chromium, counters) -> None:
    """Check every value label of the charts starts inside its canvas, so it reads as the
    number it is: with the plot at a fixed 56 px, "123456900000" was cut to "56900000" and
    "-98765440" lost its minus sign at the canvas' left edge. A small metric (temp_c) keeps
    the plot where it was."""
    env, base = counters
    page = _page(chromium, base, env.tokens["viewer"], "/#/device/pump-1")
    for m in ("bytes_total", "level", "temp_c"):
        page.wait_for_selector(f"canvas[data-metric='{m}'][data-points]")
    got = page.eval_on_selector_all("canvas[data-metric]", """cs => cs.map(c => {
        const ctx = document.createElement('canvas').getContext('2d');
        ctx.font = '11px system-ui, sans-serif';
        const pad = +(c.dataset.padLeft || 56);  // where the plot starts (56 px before)
        const labels = (c.dataset.yLabels || '').split('|').filter(Boolean);
        // ink in the canvas' first 2 px columns: a label cut at its edge (white, and the
        // grid's #e6e9ed, are no ink)
        const px = c.getContext('2d').getImageData(0, 0, 2 * (window.devicePixelRatio || 1),
                                                   c.height).data;
        let ink = 0;
        for (let i = 0; i < px.length; i += 4) {
            if (Math.max(px[i], px[i + 1], px[i + 2]) < 200) ink++;
        }
        return { metric: c.dataset.metric, pad, labels, ink,
                 first: Math.min(...labels.map(l => pad - 4 - ctx.measureText(l).width)) };
    })""")
    by = {g["metric"]: g for g in got}
    assert [g["ink"] for g in got] == [0, 0, 0], got  # no label runs off the left edge
    assert all(g["labels"] and g["first"] >= 0 for g in got), got
    assert all(lab.startswith("-") for lab in by["level"]["labels"]), by["level"]
    assert all(len(lab.split(".")[0]) == 12 for lab in by["bytes_total"]["labels"]), by
    assert by["temp_c"]["pad"] == 56
    page.context.close()


# ---------------------------------------------------------------- the token of another tab
def test_a_token_changed_in_another_tab_is_taken_up(chromium, shared_live) -> None:  # noqa: F811
    """Check a tab showing the alerts as a viewer (operator buttons disabled) takes up the
    operator token entered in another tab: it names the operator and enables the buttons
    whose requests now carry that token (it went on saying "viewer" until reloaded, and in
    the other direction offered operator buttons answered 403, or named one user while
    acting as another); and that a token removed there shows the login form here."""
    env, base, alert = shared_live
    page = _page(chromium, base, env.tokens["viewer"], "/#/alerts")
    row = f"tr[data-alert='{alert.id}']"
    page.wait_for_selector(f"{row} button[data-action='ack']:disabled")
    assert "(viewer)" in page.inner_text("#who")
    other = page.context.new_page()
    other.goto(base + "/#/fleet")
    other.wait_for_selector("#who:has-text('viewer')")
    other.click("#logout")  # "Change token", then the operator's
    other.fill("#token", env.tokens["operator"])
    other.click("#login-form button")
    other.wait_for_selector("#who:has-text('operator')")
    page.wait_for_selector("#who:has-text('(operator)')", timeout=8000)
    page.wait_for_selector(f"{row} button[data-action='ack']:enabled", timeout=8000)
    other.click("#logout")
    page.wait_for_selector("#login:not(.hidden)", timeout=8000)
    assert page.inner_text("#login-error").startswith("Another tab of this dashboard removed")
    page.context.close()


# ---------------------------------------------------------------- values near a double's end
@pytest.fixture
def extremes(data_dir: Path) -> Iterator[tuple[Env, str]]:
    """pump-1 with 2 min of a metric stuck at 1.7e308 (a "no value" sentinel) and one
    swinging between +-1.7e308, a reading every 3 s (one per chart bucket)."""
    gen = build_env(data_dir)
    env = next(gen)
    now = int(time.time()) // 3 * 3
    batch = [{"ts": now - 120 + 3 * i, "seq": i + 1,
              "metrics": {"sentinel": 1.7e308, "swing": 1.7e308 if i % 2 else -1.7e308}}
             for i in range(40)]
    assert env.send(batch).json()["accepted"] == 80
    with serve_in_thread(env.client.app) as port:
        yield env, f"http://127.0.0.1:{port}"
    gen.close()


def test_readings_near_the_largest_double_are_drawn(chromium, extremes) -> None:
    """Check a metric stuck at 1.7e308 and one swinging between +-1.7e308 get a finite value
    axis and a line drawn: the flat one's padding and the swing's range passed the largest
    double, the axis became -Infinity..Infinity and the chart was blank."""
    env, base = extremes
    page = _page(chromium, base, env.tokens["viewer"], "/#/device/pump-1")
    for m in ("sentinel", "swing"):
        page.wait_for_selector(f"canvas[data-metric='{m}'][data-points]")
    got = page.eval_on_selector_all("canvas[data-metric]", """cs => cs.map(c => {
        const px = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let line = 0;  // the series' colour, #1f6feb
        for (let i = 0; i < px.length; i += 4) {
            if (px[i] < 70 && px[i + 1] > 90 && px[i + 1] < 140 && px[i + 2] > 200) line++;
        }
        return { metric: c.dataset.metric, points: +c.dataset.points, lo: +c.dataset.lo,
                 hi: +c.dataset.hi, line, labels: c.dataset.yLabels };
    })""")
    for g in got:
        assert g["points"] >= 30 and math.isfinite(g["lo"]) and math.isfinite(g["hi"]), g
        assert g["lo"] < g["hi"] and g["line"] > 30, g  # none drawn before
    page.context.close()


def test_a_token_check_left_unanswered_is_said(chromium, shared_live) -> None:  # noqa: F811
    """Check a page opened with a saved token while the gateway does not answer its /v1/me
    says so within 15 s (it said "Loading…" for good), and shows the fleet once answered."""
    env, base, _ = shared_live
    ctx = chromium.new_context()
    page = ctx.new_page()
    page.clock.install()
    page.goto(base + "/")
    page.evaluate("t => localStorage.setItem('edgewise.token', t)", env.tokens["viewer"])
    held: list = []
    page.route("**/v1/me", lambda route: held.append(route))
    page.reload()
    _settle(page, lambda: len(held) == 1)
    page.clock.run_for(16_000)
    flash = page.wait_for_selector("#flash[data-source='poll']", timeout=8000)
    assert re.fullmatch(r"The gateway has not answered for 1\d s\. Waiting…",
                        flash.inner_text()), flash.inner_text()
    for route in held:
        route.continue_()
    page.unroute("**/v1/me")
    page.wait_for_selector("tr[data-device='pump-1']", timeout=8000)
    assert page.query_selector("#flash") is None
    ctx.close()
