"""The dashboard's alert lists say when older alerts follow, and show them on request.

A bug hunt found the Alerts page asking for limit=500 and never reading the Link header:
with 600 open alerts the fleet said 600 while the table showed 500, nothing said more
existed, and the oldest 100 could not be acknowledged from the dashboard (the device page
stopped at 200 the same way).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgewise.store import open_store
from edgewise.store.base import Alert
from tests.server.conftest import Env, build_env, serve_in_thread

pytestmark = pytest.mark.browser

S = 10**9


@pytest.fixture(scope="module")
def six_hundred(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Alert]]:
    """A store file whose pump-1 has 600 open alerts, a minute apart (newest last), written
    once (600 inserts take seconds): each test serves a copy of its own."""
    path = tmp_path_factory.mktemp("alerts") / "edgewise.duckdb"
    store = open_store(f"duckdb:///{path}")
    try:
        t0 = time.time_ns() - 11 * 3600 * S
        alerts = [store.add_alert(Alert("pump-1", t0 + k * 61 * S, t0 + k * 61 * S + S, 0.99,
                                        kind="seq_gap", message=f"gap {k}"))
                  for k in range(600)]
    finally:
        store.close()
    return path, alerts


@pytest.fixture
def served(tmp_path: Path, six_hundred: tuple[Path, list[Alert]],
           ) -> Iterator[tuple[Env, str, list[Alert]]]:
    """A served app on a copy of the 600 alerts' store (device pump-1 registered)."""
    store_file, alerts = six_hundred
    shutil.copyfile(store_file, tmp_path / "edgewise.duckdb")
    gen = build_env(tmp_path)
    env = next(gen)
    assert len(env.store.list_alerts("pump-1", limit=1000)) == 600
    with serve_in_thread(env.client.app) as port:
        yield env, f"http://127.0.0.1:{port}", alerts
    gen.close()


def _login(page, url: str, env: Env, hash_: str) -> None:  # type: ignore[no-untyped-def]
    page.goto(f"{url}/")
    page.fill("#token", env.tokens["operator"])
    page.click("#login-form button")
    page.wait_for_selector("#main:not(.hidden)")
    page.goto(f"{url}/{hash_}")


def _rows(page, where: str, n: int) -> None:  # type: ignore[no-untyped-def]
    """Wait until ``where`` lists ``n`` alerts (polled here: the page's CSP forbids eval)."""
    _wait_for(lambda: page.locator(f"{where} tr[data-alert]").count() == n,
              f"{where} listing {n} alerts")


def _show_older(page, rows: str, more: str, shown: int, then: int,  # type: ignore[no-untyped-def]
                older_id: str) -> None:
    """Check ``rows`` lists ``shown`` alerts (not ``older_id``) and ``more`` says older
    ones follow; click its button and check ``rows`` lists ``then``, ``older_id`` among them."""
    _rows(page, rows, shown)
    page.wait_for_selector(f"{more}:not(.hidden)")
    assert page.inner_text(more).startswith(
        f"Showing the newest {shown} alerts; more are older."), page.inner_text(more)
    older = page.locator(f"{rows} tr[data-alert='{older_id}']")
    assert older.count() == 0
    page.click(f"{more} button[data-action='older']")
    _rows(page, rows, then)
    assert older.count() == 1


def _wait_for(check, what: str, timeout: float = 15.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not in {timeout} s: {what}")
        time.sleep(0.1)


def test_the_alerts_page_says_older_alerts_follow_and_shows_them(
    chromium, served
) -> None:
    """Check the Alerts page shows the newest 500 of 600 open alerts, says older ones
    follow, and after "Show older alerts" shows all 600 (the oldest can be acknowledged)
    and says nothing more."""
    env, url, alerts = served
    page = chromium.new_page(viewport={"width": 1280, "height": 900})
    try:
        _login(page, url, env, "#/alerts")
        _show_older(page, "#alert-rows", "#alerts-more", 500, 600, alerts[0].id)
        page.wait_for_selector("#alerts-more.hidden", state="attached")
        oldest = page.locator(f"tr[data-alert='{alerts[0].id}']")
        oldest.locator("button[data-action='ack']").click()
        # the redraw keeps the older alerts shown: 599 open ones, all listed
        _rows(page, "#alert-rows", 599)
        assert oldest.count() == 0
        assert env.store.get_alert(alerts[0].id).status == "acknowledged"
    finally:
        page.close()


def test_the_device_page_says_older_alerts_follow(chromium, served) -> None:
    """Check the device page shows the newest 200 of the device's 600 alerts, says older
    ones follow, and shows 200 more on request."""
    env, url, alerts = served
    page = chromium.new_page(viewport={"width": 1280, "height": 900})
    try:
        _login(page, url, env, "#/device/pump-1")
        _show_older(page, "#device-alerts", "#device-alerts-more", 200, 400, alerts[200].id)
        assert page.locator(f"#device-alerts tr[data-alert='{alerts[-1].id}']").count() == 1
    finally:
        page.close()
