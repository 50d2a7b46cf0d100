"""The device page's Forecast button in a real headless Chromium: the forecast and its
interval band drawn after the last readings, and too little history said."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.server.conftest import Env, build_env, serve_in_thread
from tests.server.test_dashboard_ui_browser import DEVICE_POLL, _poll_drawn
from tests.server.test_forecast_route import DAYS, _send_hourly

pytestmark = pytest.mark.browser


@pytest.fixture
def served(data_dir: Path) -> Iterator[tuple[Env, str, int]]:
    """pump-1 with 10 days of an hourly daily cycle (load_kw) and 4 days of another
    (short_kw, too little for 48 steps ahead), served; and load_kw's last reading (s)."""
    gen = build_env(data_dir)
    env = next(gen)
    end = _send_hourly(env, "load_kw", DAYS)
    _send_hourly(env, "short_kw", 4, seq0=5000)
    with serve_in_thread(env.client.app) as port:
        yield env, f"http://127.0.0.1:{port}", end
    gen.close()


def _band_pixels(page, metric: str) -> int:
    """Pixels of the forecast canvas in the band's or the forecast line's purple."""
    return page.evaluate("""m => {
        const c = document.querySelector(`canvas[data-forecast='${m}']`);
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let n = 0;
        for (let i = 0; i < d.length; i += 4) {
            const [r, g, b] = [d[i], d[i + 1], d[i + 2]];
            if (b > 190 && r > 110 && r < 235 && g < r - 15) n++;
        }
        return n; }""", metric)


def test_forecast_button_draws_the_band_or_says_too_little_history(
        chromium, served) -> None:
    """Check "Forecast" on a metric with 10 days of hourly readings draws its 48 steps with
    the interval band after the readings (the time axis reaching past the last reading),
    and on one with 4 days says it needs more history, in the API's words."""
    env, base, end = served
    ctx = chromium.new_context(viewport={"width": 1280, "height": 900})
    page = ctx.new_page()
    page.clock.install()  # to make a poll come at once
    page.goto(base + "/")
    page.evaluate("t => localStorage.setItem('edgewise.token', t)", env.tokens["viewer"])
    page.goto(base + "/#/device/pump-1")
    page.reload()
    page.wait_for_selector("button.forecast-btn[data-metric='load_kw']")
    assert page.locator("canvas[data-forecast]").count() == 0  # on demand only

    page.click("button.forecast-btn[data-metric='load_kw']")
    canvas = page.wait_for_selector("canvas[data-forecast='load_kw']", timeout=20_000)
    assert canvas.get_attribute("data-forecast-points") == "48"
    assert int(canvas.get_attribute("data-points")) > 40  # the readings before it
    ticks = [float(t) for t in canvas.get_attribute("data-ticks").split(",")]
    assert max(ticks) > end + 24 * 3600  # the axis runs a day or more past the last reading
    info = page.inner_text(".forecast[data-forecast-for='load_kw'] .forecast-info")
    assert "48 steps of 1 h" in info and "cycle of 1 d" in info and "240 readings" in info
    assert _band_pixels(page, "load_kw") > 500
    # the 3 s refresh of the charts leaves it drawn
    _poll_drawn(page, DEVICE_POLL)
    assert page.locator("canvas[data-forecast='load_kw']").count() == 1

    page.click("button.forecast-btn[data-metric='short_kw']")
    box = page.wait_for_selector(".forecast[data-forecast-for='short_kw']"
                                 "[data-state='too_little_history']", timeout=20_000)
    text = box.inner_text()
    assert text.startswith("Forecast unavailable:") and "at least 212 steps of 1h" in text
    assert "got 96 steps" in text
    assert page.locator("canvas[data-forecast='short_kw']").count() == 0
    assert page.is_enabled("button.forecast-btn[data-metric='short_kw']")
    ctx.close()
