"""The dashboard and the label queue behind a proxy that serves them under a path prefix
(nginx ``location /edgewise/ { proxy_pass http://gateway:8080/; }``), in a real headless
Chromium: every page, script and API call stays under the prefix."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edgewise.telemetry import Reading
from tests.server.conftest import Env, build_env, serve_in_thread
from tests.server.test_dashboard_browser import _wait_for
from tests.server.test_labels_api import _send_history

pytestmark = pytest.mark.browser

PREFIX = "/edgewise"


def _behind_prefix(app: Any, outside: list[str]) -> Any:
    """``app`` as such a proxy serves it: ``PREFIX/…`` reaches the app as ``/…``; anything
    else is the proxy's own 404 (recorded in ``outside``), as the gateway is not there."""
    async def proxy(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await app(scope, receive, send)
        path = scope["path"]
        if not path.startswith(PREFIX + "/"):
            outside.append(path)
            await send({"type": "http.response.start", "status": 404,
                        "headers": [(b"content-type", b"text/plain")]})
            return await send({"type": "http.response.body", "body": b"not the gateway"})
        inner = path[len(PREFIX):]
        scope = {**scope, "path": inner, "raw_path": inner.encode()}
        return await app(scope, receive, send)
    return proxy


@pytest.fixture
def prefixed(data_dir: Path) -> Iterator[tuple[Env, str, list[str]]]:
    gen = build_env(data_dir)
    env = next(gen)
    _send_history(env)
    now = time.time()  # two spikes: a quality plot to draw
    env.store.append([Reading("pump-1", "temp_c", int((now - back) * 1e9), 5000.0)
                      for back in (150.5, 80.5)])
    outside: list[str] = []
    with serve_in_thread(_behind_prefix(env.client.app, outside)) as port:
        yield env, f"http://127.0.0.1:{port}{PREFIX}", outside
    gen.close()


def test_dashboard_and_label_queue_work_under_a_path_prefix(chromium, prefixed) -> None:
    """Check login, the fleet, a device's chart and quality plot, the CSV export and the
    label queue all work at ``/edgewise/`` and that nothing is asked outside it (the
    pages asked ``/static/…`` and ``/v1/…`` from the server's root: the proxy's 404s, so
    the dashboard did not even log in)."""
    env, base, outside = prefixed
    page = chromium.new_page(viewport={"width": 1280, "height": 1400})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.goto(base + "/")
    page.fill("#token", env.tokens["operator"])
    page.click("#login-form button")
    page.wait_for_selector("#who:has-text('operator')", timeout=15000)
    page.wait_for_selector("tr[data-device='pump-1']")

    page.click("tr[data-device='pump-1'] a")
    canvas = page.wait_for_selector("canvas[data-metric='temp_c'][data-points]")
    _wait_for(lambda: int(canvas.get_attribute("data-points") or 0) >= 20)
    img = page.wait_for_selector("#quality-plots figure[data-metric='temp_c'] img[src]")
    _wait_for(lambda: img.evaluate("i => i.complete && i.naturalWidth > 0"))
    page.wait_for_selector("#download-csv:enabled")
    with page.expect_download() as got:
        page.click("#download-csv")
    assert len(Path(got.value.path()).read_text(encoding="utf-8").splitlines()) > 100

    page.click("a:has-text('Label queue')")
    page.wait_for_url(base + "/static/labels.html")
    page.goto(base + "/static/labels.html?device=pump-1&k=2")
    page.wait_for_selector("section.queue-item")
    assert len(page.query_selector_all("section.queue-item")) == 2
    page.click("a:has-text('Fleet')")
    page.wait_for_selector("tr[data-device='pump-1']")
    assert outside == [] and errors == []
    page.close()
