"""The fleet page's Groups panel in a real headless Chromium: the groups with their members
and traits, the odd one out highlighted, fetched on demand only."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.server.conftest import Env, build_env, serve_in_thread
from tests.server.test_dashboard_ui_browser import FLEET_POLL, _poll_drawn
from tests.server.test_groups_route import COOL, HOT, send_kind

pytestmark = pytest.mark.browser


@pytest.fixture
def served(data_dir: Path) -> Iterator[tuple[Env, str]]:
    """Four pumps at 40 °C, four at 60 °C and one at 90 °C, served."""
    gen = build_env(data_dir)
    env = next(gen)
    for d in (*COOL, "cool-4"):
        send_kind(env, d, 40.0)
    for d in (*HOT, "hot-4"):
        send_kind(env, d, 60.0)
    send_kind(env, "odd-1", 90.0)
    with serve_in_thread(env.client.app) as port:
        yield env, f"http://127.0.0.1:{port}"
    gen.close()


def test_groups_panel_shows_the_groups_and_the_odd_one_out(chromium, served) -> None:
    """Check "Find groups" on the fleet page lists the two groups with their members as
    links to device pages and the cool group's trait in words, highlights the 90 °C pump as
    an odd one out with why, and that the 3 s refresh of the fleet table fetches no groups."""
    env, base = served
    ctx = chromium.new_context(viewport={"width": 1280, "height": 900})
    page = ctx.new_page()
    asked: list[str] = []
    page.on("request", lambda r: asked.append(r.url) if "/v1/fleet/groups" in r.url else None)
    page.clock.install()  # to make a poll come at once
    page.goto(base + "/")
    page.evaluate("t => localStorage.setItem('edgewise.token', t)", env.tokens["viewer"])
    page.goto(base + "/#/fleet")
    page.reload()
    page.wait_for_selector("#fleet-rows tr[data-device='odd-1']")
    assert asked == [] and page.locator("#groups-table").count() == 0  # on demand only

    page.click("#groups-btn")
    page.wait_for_selector("#groups-result[data-state='ok'] #groups-table", timeout=30_000)
    rows = page.locator("#groups-table tbody tr")
    assert rows.count() == 2
    members = [sorted(rows.nth(i).locator("td.members a").evaluate_all(
        "links => links.map(a => a.dataset.device)")) for i in range(2)]
    assert sorted(members) == [sorted([*COOL, "cool-4"]), sorted([*HOT, "hot-4", "odd-1"])]
    cool = page.locator("#groups-table tr[data-group='0']")
    assert "runs cooler: temp_c median 40" in cool.inner_text()
    odd_row = page.locator("#odd-table tr.odd[data-device='odd-1']")
    # the median of 90 °C plus noise, as the page rounds it (89.9 with these seeds)
    assert re.search(r"runs hotter: temp_c median (89\.\d|90(\.\d)?) vs group 1 60",
                     odd_row.inner_text()), odd_row.inner_text()
    assert page.locator(".odd-member .badge.odd").count() == 1
    assert "9 devices on 2 metric(s)" in page.inner_text(".groups-info")

    _poll_drawn(page, FLEET_POLL)  # a poll or more of the fleet table
    assert len(asked) == 1 and page.locator("#groups-table").count() == 1
    page.click("#groups-table a[data-device='hot-2']")
    page.wait_for_function("location.hash === '#/device/hot-2'")
    ctx.close()
