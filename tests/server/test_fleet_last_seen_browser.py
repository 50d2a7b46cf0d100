"""The dashboard's last-seen in a real headless Chromium, for a device uploading a backlog
(its readings a day old, arriving now): the fleet says it was heard from seconds ago (it
said '1 d ago' and 'stale'), the tooltip names the newest reading's own time, and the
device page still charts the readings where they are."""

from __future__ import annotations

import time

import pytest

from tests.server.test_dashboard_browser import (  # noqa: F401 (fixtures)
    _wait_for,
    live,
)
from tests.server.test_dashboard_ui_browser import _page

pytestmark = pytest.mark.browser


def test_a_backlog_arriving_now_is_seen_now_and_charted_where_it_is(
        chromium, live) -> None:  # noqa: F811
    """Check the fleet row of a device sending day-old readings now: 'ok', 's ago', a
    tooltip with the reading time; and its page charts those readings."""
    env, base, _ = live
    _, secret = env.security.add_device("backlog")
    day_ago = int(time.time()) - 86_400
    batch = [{"ts": day_ago + i, "seq": i + 1, "metrics": {"temp_c": 40.0 + i % 5}}
             for i in range(60)]
    assert env.send(batch, device="backlog", secret=secret).json()["accepted"] == 60
    page = _page(chromium, base, env.tokens["viewer"])
    row = page.wait_for_selector("tr[data-device='backlog']")
    assert row.query_selector(".badge").get_attribute("data-health") == "ok"
    seen = row.query_selector_all("td")[2]
    assert seen.inner_text().endswith(" s ago"), seen.inner_text()
    assert "newest reading stamped" in (seen.get_attribute("title") or "")
    page.goto(base + "/#/device/backlog?window=15m")
    canvas = page.wait_for_selector("canvas[data-metric='temp_c'][data-points]")
    _wait_for(lambda: int(canvas.get_attribute("data-points") or 0) >= 15)  # 3 s buckets
    assert "last seen" in page.inner_text("#device-info")
    assert " s ago" in page.inner_text("#device-info")
    page.context.close()
