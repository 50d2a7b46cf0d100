"""Server hunt, defects 2 and 6 in a real headless Chromium: the device page says why RUL is
unavailable when the model file does not load (it vanished, with an uncaught promise error
every poll, while the route answered 500), and a hash with a stray ``%`` opens a page
instead of hanging on "Loading…" (``decodeURIComponent`` threw a URIError).

Uses the ``live`` and ``shared_live`` fixtures of test_dashboard_browser (pump-1 with 5 min
of temp_c/rpm/vib_mm_s and a RUL model file ``rul-v1.ewm`` in the data dir): the tests that
only look share the module's ``shared_live``.
"""

from __future__ import annotations

import os
import re
import time

import pytest

from tests.server.test_dashboard_browser import (  # noqa: F401 (fixtures)
    live,
    shared_live,
)
from tests.server.test_dashboard_ui_browser import _page, _poll_drawn, _poll_now

RUL = re.compile(r"/v1/devices/pump-1/rul$")

pytestmark = pytest.mark.browser


def _errors(page) -> list[str]:
    """Uncaught errors of ``page`` (an unhandled promise rejection is one), as they come."""
    seen: list[str] = []
    page.on("pageerror", lambda e: seen.append(str(e)))
    return seen


def _truncate(path) -> None:
    """Cut a model file short (header intact) and make it newer than any other."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    t = time.time() + 60
    os.utime(path, (t, t))


def test_a_model_file_that_does_not_load_is_said_on_the_device_page(chromium, live) -> None:  # noqa: F811
    """Check a damaged newer model file is passed over (the RUL still shows, naming it), and
    once no model file loads the page says so with the route's detail; no uncaught error."""
    env, base, _ = live
    models = env.settings.data_dir / "models"
    newer = models / "rul-v2.ewm"
    newer.write_bytes((models / "rul-v1.ewm").read_bytes())
    _truncate(newer)
    page = _page(chromium, base, env.tokens["viewer"], "/#/device/pump-1", clock=True)
    errors = _errors(page)
    rul = page.wait_for_selector("#device-rul[data-rul]", timeout=15000)
    skipped = page.wait_for_selector("#device-rul .rul-skipped")
    assert "rul-v2.ewm" in skipped.inner_text() and "rul-v1.ewm" in skipped.inner_text()
    assert "Remaining useful life" in rul.inner_text()

    _truncate(models / "rul-v1.ewm")  # now none loads
    _poll_now(page, RUL)  # the next poll asks now
    box = page.wait_for_selector("#device-rul[data-rul-reason='bad_model']", timeout=15000)
    text = box.inner_text()
    assert text.startswith("Remaining useful life unavailable: No RUL model file loads"), text
    assert "rul-v1.ewm" in text and "edgewise train rul" in text, text
    assert box.get_attribute("data-rul") is None
    _poll_drawn(page, RUL)  # another poll answered: still said, still no uncaught error
    assert page.query_selector("#device-rul[data-rul-reason='bad_model']") is not None
    assert errors == []
    page.context.close()


@pytest.mark.parametrize("hash_", ["#/device/pump%", "#/device/pump%zz", "#/%E0%A4%A"])
def test_a_stray_percent_in_the_hash_opens_a_page(chromium, shared_live, hash_: str) -> None:  # noqa: F811
    """Check a hash that is no valid %-encoding opens a page (the raw text as the device id,
    or the fleet), not "Loading…" forever with a URIError."""
    env, base, _ = shared_live
    page = _page(chromium, base, env.tokens["viewer"], "/" + hash_)
    errors = _errors(page)
    page.reload()
    page.wait_for_selector("#main h1", timeout=8000)
    heading = page.inner_text("#main h1")
    if hash_.startswith("#/device/"):
        assert heading == f"Device {hash_.removeprefix('#/device/')}", heading
        page.wait_for_selector("#device-info:has-text('unknown device')", timeout=8000)
    else:
        assert heading == "Fleet", heading
    assert "Loading" not in page.inner_text("#main")
    assert errors == []
    page.context.close()
