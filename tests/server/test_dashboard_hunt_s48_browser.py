"""Label queue hunt (s48) in a real headless Chromium, against a served gateway app.

* A metric whose readings reach +-1e308 (a float's "no value" sentinel, on both sides)
  drew no line in the label queue: its value range (hi - lo) was Infinity, every point
  NaN, and Chromium refused the polyline ("Expected number"), as if the metric had no
  readings. The dashboard's charts were mended for this in s46; the queue's were not.
* On a phone (375 px) the queue of a device with a 64-character id (the longest an id
  may be) widened the page to about 650 px: the id, one unbroken word, did not wrap in the
  status line nor in each window's heading.
* Behind a proxy (nginx, oauth2-proxy), a poll answered by the proxy's own page was shown
  as if the gateway had said it: nginx's "502 Bad Gateway" page, while the gateway
  restarted, was flashed as its HTML source ("Gateway error (HTTP 502: <html> <head>…");
  and a sign-in page (the proxy's session expired: a redirect to it, answered 200) was
  read as data, flashing "Cannot read properties of undefined (reading 'length')" for
  good (the label queue: "Cannot read properties of null (reading 'items')"). The first
  now says the page's title, the second that a page came instead of the gateway's answer,
  and from where.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.server.conftest import Env, build_env, serve_in_thread
from tests.server.test_dashboard_ui_browser import FLEET_POLL, _page, _poll_now

pytestmark = pytest.mark.browser

LONG_ID = "d" + "x" * 63  # DEVICE_ID_RE's longest
SENTINEL = "sentinel-1"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Env, str]]:
    """The app with LONG_ID (5 min of a sawtooth ``temp_c``) and SENTINEL (the same, and
    ``edge``: +-1e308 by turns). The tests only look."""
    gen = build_env(Path(tmp_path_factory.mktemp("s48")))
    env = next(gen)
    now = int(time.time())
    for name, edge in ((LONG_ID, False), (SENTINEL, True)):
        device, secret = env.security.add_device(name)
        batch = [{"ts": now - 300 + i, "seq": i + 1, "metrics": {
            "temp_c": 40 + i % 7, **({"edge": 1e308 if i % 2 else -1e308} if edge else {})}}
            for i in range(300)]
        assert env.send(batch, device, secret).json()["accepted"] == 300 * (1 + edge)
    with serve_in_thread(env.client.app) as port:
        yield env, f"http://127.0.0.1:{port}"
    gen.close()


def _queue(chromium, base: str, token: str, device: str, **context):
    """The label queue of ``device``, loaded, in a context of its own."""
    page = chromium.new_context(**context).new_page()
    page.goto(base + "/static/labels.html")
    page.evaluate("t => localStorage.setItem('edgewise.token', t)", token)
    page.goto(base + f"/static/labels.html?device={device}&k=3")
    page.wait_for_selector("section.queue-item", timeout=30_000)
    return page


def test_a_metric_at_plus_and_minus_1e308_is_drawn_in_the_label_queue(chromium, served) -> None:
    """Check each window of SENTINEL draws ``edge`` as a line whose every point is a finite
    number inside the chart, top and bottom both reached. Its points were all "x,NaN": no
    line."""
    env, base = served
    page = _queue(chromium, base, env.tokens["viewer"], SENTINEL,
                  viewport={"width": 1280, "height": 900})
    charts = page.eval_on_selector_all("svg[data-metric='edge']", """ss => ss.map(s =>
        [...s.querySelectorAll('polyline')].map(p => p.getAttribute('points')).join(' '))""")
    assert charts
    for points in charts:
        ys = [float(pt.split(",")[1]) for pt in points.split()]
        assert ys and all(math.isfinite(y) and 0 <= y <= 70 for y in ys), points[:120]
        assert min(ys) == pytest.approx(4.0) and max(ys) == pytest.approx(66.0)
    page.context.close()


def test_the_label_queue_of_a_64_character_device_id_fits_a_phone(chromium, served) -> None:
    """Check the queue of LONG_ID on a 375 px screen does not scroll sideways (the page was
    655 px wide), and its id is still written whole in each window's heading."""
    env, base = served
    page = _queue(chromium, base, env.tokens["viewer"], LONG_ID,
                  viewport={"width": 375, "height": 740}, device_scale_factor=2,
                  is_mobile=True, has_touch=True)
    sw, bw, iw = page.evaluate(
        "() => [document.documentElement.scrollWidth, document.body.scrollWidth, innerWidth]")
    assert iw == 375 and sw <= iw and bw <= iw, (sw, bw, iw)
    assert page.locator(".queue-device").first.inner_text() == LONG_ID
    page.context.close()


# ---------------------------------------------------------------- a proxy's own pages
NGINX_502 = (b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center>"
             b"<h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx/1.24.0</center>\r\n"
             b"</body>\r\n</html>\r\n")
SIGN_IN = (b"<!DOCTYPE html><html><head><title>Sign In</title></head><body><form>"
           b"<button>Sign in with OpenID Connect</button></form></body></html>")


def _proxy(app: Any, mode: dict[str, str]) -> Any:
    """``app`` behind a proxy that passes everything on while ``mode["now"]`` is "up"; when
    "down" (the gateway restarting) answers each API call with nginx's 502 page; when
    "signin" (its session expired) redirects each to its sign-in page, answered 200."""
    async def page(send: Any, status: int, body: bytes, extra: list | None = None) -> None:
        await send({"type": "http.response.start", "status": status, "headers": [
            (b"content-type", b"text/html"), *(extra or [])]})
        await send({"type": "http.response.body", "body": body})

    async def proxy(scope: dict[str, Any], receive: Any, send: Any) -> None:
        path = scope.get("path", "")
        if scope["type"] == "http" and path == "/oauth2/sign_in":
            return await page(send, 200, SIGN_IN)
        if scope["type"] == "http" and path.startswith("/v1/") and mode["now"] != "up":
            if mode["now"] == "down":
                return await page(send, 502, NGINX_502)
            return await page(send, 302, b"", [(b"location", b"/oauth2/sign_in?rd=%2F")])
        return await app(scope, receive, send)
    return proxy


@pytest.fixture
def proxied(data_dir: Path) -> Iterator[tuple[Env, str, dict[str, str]]]:
    gen = build_env(data_dir)
    env = next(gen)
    mode = {"now": "up"}
    with serve_in_thread(_proxy(env.client.app, mode)) as port:
        yield env, f"http://127.0.0.1:{port}", mode
    gen.close()


@pytest.mark.parametrize(("now", "said"), [
    ("down", "Gateway error (HTTP 502: 502 Bad Gateway), retrying…"),
    ("signin", ("Not the gateway's answer: a page came instead (\"Sign In\", from 127.0.0.1:"
                "{port}). A proxy in front of the gateway asking to sign in again? Reload the "
                "page.")),
], ids=["nginx-502", "sign-in-page"])
def test_a_proxys_own_page_is_said_by_its_title(chromium, proxied, now: str, said: str) -> None:
    """Check a poll answered by the proxy's page flashes ``said`` (no HTML source, no
    "Cannot read properties"), and that the message goes once the gateway answers again."""
    env, base, mode = proxied
    page = _page(chromium, base, env.tokens["viewer"], clock=True)
    page.wait_for_selector("tr[data-device='pump-1']")
    mode["now"] = now
    _poll_now(page, FLEET_POLL)
    flash = page.wait_for_selector("#flash[data-source='poll']", timeout=10_000)
    assert flash.inner_text() == said.format(port=base.rsplit(":", 1)[1])
    mode["now"] = "up"
    _poll_now(page, FLEET_POLL)
    page.wait_for_selector("#flash", state="detached", timeout=10_000)
    page.context.close()


def test_the_label_queue_says_a_sign_in_page_came_instead(chromium, proxied) -> None:
    """Check the label queue, its request redirected to the proxy's sign-in page, says so
    (it said "Cannot read properties of null (reading 'items')")."""
    env, base, mode = proxied
    page = chromium.new_context(viewport={"width": 1280, "height": 900}).new_page()
    page.goto(base + "/static/favicon.svg")
    page.evaluate("t => localStorage.setItem('edgewise.token', t)", env.tokens["viewer"])
    mode["now"] = "signin"
    page.goto(base + "/static/labels.html?device=pump-1&k=3")
    status = page.locator("#queue-status")
    page.wait_for_function("() => !document.querySelector('#queue-status').textContent"
                           ".startsWith('Loading')", timeout=10_000)
    assert status.inner_text() == (
        f"Not the gateway's answer: a page came instead (\"Sign In\", from "
        f"{base.split('//')[1]}). A proxy in front of the gateway asking to sign in again? "
        f"Reload the page.")
    assert page.locator("section.queue-item").count() == 0
    page.context.close()
