"""Dashboard and label-queue bugs a hunt proved in headless Chromium, each checked in one.

* A token with one character beyond Latin-1 (a zero-width space, which trim() keeps) made
  every fetch throw before sending: "Gateway unreachable, retrying…" forever, also after a
  reload, as the token was kept.
* The RUL panel showed a line "null" (replaceChildren writes null as text), said "steps"
  where the API counts readings, and drew an open RUL / interval as bounded ("125 steps",
  "interval 77–125").
* The label queue drew a straight line across a sensor dropout.
* The quality plot showed the old window for up to a minute after a change of window,
  under the new window's caption.

One served app for all (``served``): pump-1 of test_dashboard_browser's ``serve_live``
(5 min of temp_c/rpm/vib_mm_s, a temp_c spike, a RUL model file) and ``gappy``, whose
``b`` sends nothing 20 s of every 100 s.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Iterator
from datetime import datetime

import pytest

from tests.server.conftest import Env
from tests.server.test_dashboard_browser import serve_live
from tests.server.test_dashboard_ui_browser import _settle

pytestmark = pytest.mark.browser

ZWSP = "\u200b"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Env, str]]:
    """The tests only look: none sends, labels or deletes anything."""
    with serve_live(tmp_path_factory.mktemp("s35")) as (env, base, _):
        device, secret = env.security.add_device("gappy")
        now = time.time()
        batch = []
        for i in range(600):
            m = {"a": 10 + math.sin(i / 30)}
            if not 40 <= i % 100 < 60:
                m["b"] = 5 + (i % 100) / 20
            batch.append({"ts": now - 620 + i, "seq": i + 1, "metrics": m})
        assert env.send(batch, device, secret).json()["accepted"] == 600 + 480
        yield env, base


def _open(chromium, base: str, token: str, path: str, setup=None):
    """A page of its own context at ``path`` with ``token`` saved; ``setup(page)`` runs
    before the dashboard loads (routes, listeners), so it sees the first requests."""
    page = chromium.new_context(viewport={"width": 1280, "height": 900}).new_page()
    page.goto(base + "/static/favicon.svg")  # same origin, no dashboard script
    page.evaluate("t => localStorage.setItem('edgewise.token', t)", token)
    if setup:
        setup(page)
    page.goto(base + path)
    return page


def test_a_token_with_a_non_latin1_character_is_refused_not_retried(chromium, served) -> None:
    """Check a token with a zero-width space is refused at once, named, and not kept: the
    page said "Gateway unreachable, retrying…" forever (fetch threw before sending)."""
    env, base = served
    page = chromium.new_context().new_page()
    sent: list[str] = []
    page.on("request", lambda r: sent.append(r.url) if "/v1/" in r.url else None)
    page.goto(base + "/")
    page.fill("#token", env.tokens["viewer"] + ZWSP)
    page.click("#login-form button")
    page.wait_for_selector("#login-error:has-text('not valid')", timeout=5000)
    said = page.inner_text("#login-error")
    assert "U+200B" in said and "printable ASCII" in said, said
    assert env.tokens["viewer"] not in said  # the secret is not shown
    assert page.evaluate("localStorage.getItem('edgewise.token')") is None
    assert page.is_visible("#login") and not page.query_selector("#flash")
    assert sent == []
    # one saved before (another tab, an older page): dropped at load, the form shown
    page.evaluate("t => localStorage.setItem('edgewise.token', t)", env.tokens["viewer"] + ZWSP)
    page.reload()
    page.wait_for_selector("#login-error:has-text('U+200B')", timeout=5000)
    assert page.evaluate("localStorage.getItem('edgewise.token')") is None
    assert not page.query_selector("#flash")
    # the same token without it works
    page.fill("#token", env.tokens["viewer"])
    page.click("#login-form button")
    page.wait_for_selector("#who:has-text('viewer')")


def test_rul_panel_has_no_null_line_and_counts_readings(chromium, served) -> None:
    """Check the RUL panel of a device with a RUL (no model passed over) shows no line
    "null", and says the API's unit (readings), not "steps"."""
    env, base = served
    answer = env.client.get("/v1/devices/pump-1/rul", headers=env.auth("viewer")).json()
    assert answer["rul"] is not None and not answer.get("skipped"), answer
    page = _open(chromium, base, env.tokens["viewer"], "/#/device/pump-1")
    box = page.wait_for_selector("#device-rul[data-rul]")
    text = box.inner_text()
    assert "null" not in text, text
    assert box.evaluate("b => [...b.childNodes].every(n => n.nodeType === 1)")  # no bare text
    assert f" {answer['rul_unit']}" in text and "steps" not in text, text
    assert "Remaining useful life" in text


def _fake_rul(page, **fields) -> None:
    """Answer pump-1's GET /rul with a RUL of ``fields`` (the rest as the API writes it)."""
    body = {"device_id": "pump-1", "model": "rul-v1.ewm", "rul": 125.0, "low": 77.0,
            "high": 125.0, "interval": 90, "rows": 300, "reason": None, "cap": 125.0,
            "rul_open": False, "high_open": False, "explanation": None,
            "rul_unit": "readings", "time_column": "cycle", "step_s": 1.0, **fields}
    page.route(re.compile(r".*/v1/devices/pump-1/rul$"),
               lambda route: route.fulfill(status=200, content_type="application/json",
                                           body=json.dumps(body)))


@pytest.mark.parametrize(("fields", "said", "not_said"), [
    ({"rul_open": True, "high_open": True},
     ["≥ 125 readings", "from 77, no upper bound"], ["–125", "up to 125"]),
    ({"rul": 90.0, "high_open": True}, ["life: 90 readings", "from 77, no upper bound"],
     ["≥", "up to"]),
    ({"rul": 90.0, "high": 110.0}, ["life: 90 readings", "from 77, up to 110"],
     ["≥", "no upper bound"]),
    ({"rul": 90.0, "high": None, "cap": None}, ["from 77, no upper bound"], ["≥"]),
], ids=["open", "high-open", "bounded", "high-null"])
def test_rul_panel_says_an_open_rul_and_interval(chromium, served, fields, said,
                                                 not_said) -> None:
    """Check rul_open reads "≥ 125" and high_open "no upper bound": the panel showed
    "125 steps" and "90% interval 77–125" for a RUL the model knows only as at least 125."""
    env, base = served
    page = _open(chromium, base, env.tokens["viewer"], "/#/device/pump-1",
                 lambda page: _fake_rul(page, **fields))
    text = page.wait_for_selector("#device-rul[data-rul]").inner_text()
    for part in said:
        assert part in text, (part, text)
    for part in not_said:
        assert part not in text, (part, text)
    assert "null" not in text and "steps" not in text, text


def test_label_queue_breaks_the_line_at_a_dropout(chromium, served) -> None:
    """Check a window whose context has nulls in b (the sensor sent nothing) draws b as
    separate runs, none crossing a null: the nulls were dropped and the rest joined into
    one polyline, a straight line across the dropout."""
    env, base = served
    page = chromium.new_context(viewport={"width": 1280, "height": 900}).new_page()
    page.goto(base + "/static/labels.html")
    page.evaluate("t => localStorage.setItem('edgewise.token', t)", env.tokens["viewer"])
    with page.expect_response("**/v1/label-queue?*", timeout=30_000) as got:
        page.goto(base + "/static/labels.html?device=gappy&k=5")
    page.wait_for_selector("section.queue-item", timeout=30_000)
    items = json.loads(got.value.text())["items"]
    gappy = [it for it in items
             if any(v is None for v in it["context"]["values"]["b"])
             and any(v is not None for v in it["context"]["values"]["b"])]
    assert gappy, "no window with a dropout of b in its context"
    checked = 0
    for it in gappy:
        values = it["context"]["values"]["b"]
        # the runs of readings between nulls, as the page should draw them
        runs = [r for r in "".join("x" if v is not None else " " for v in values).split() if r]
        lines = sorted(len(r) for r in runs if len(r) > 1)
        svg = page.locator(f"section.queue-item[data-window='{it['start_ns']}'] "
                           "svg[data-metric='b']")
        if not svg.count():
            continue
        drawn = sorted(len(p.split()) for p in svg.locator("polyline").evaluate_all(
            "ps => ps.map(p => p.getAttribute('points'))"))
        assert drawn == lines, (drawn, lines)
        assert svg.locator("circle").count() == sum(len(r) == 1 for r in runs)
        assert svg.get_attribute("data-points") == str(sum(v is not None for v in values))
        checked += 1
    assert checked


def _plot_span(url: str) -> float | None:
    """The seconds from start to end of a quality plot URL, else None."""
    m = re.search(r"/quality/plots/[^?]+\?start=([^&]+)&end=([^&]+)", url)
    if not m:
        return None
    t = [datetime.fromisoformat(re.sub(r"(\.\d{6})\d*", r"\1", s.replace("%3A", ":")))
         for s in m.groups()]
    return (t[1] - t[0]).total_seconds()


def test_quality_plot_follows_a_change_of_window(chromium, served) -> None:
    """Check the quality plot is fetched again for a new window (15m -> 6h: its range goes
    from 15 min to the last hour) and shows that one: it was keyed by device, metric and
    zone, and the 15 min plot stayed up to a minute under the 6 h window's caption."""
    env, base = served
    spans: list[float] = []
    page = _open(chromium, base, env.tokens["viewer"], "/#/device/pump-1?window=15m",
                 lambda page: page.on("request", lambda r: spans.append(_plot_span(r.url))
                                      if "/plots/" in r.url else None))
    img = "#quality-plots figure[data-metric='temp_c'] img"
    page.wait_for_selector(f"{img}[src^='data:image/png']", timeout=20_000)
    _settle(page, lambda: spans)
    assert abs(spans[0] - 900) < 2, spans
    first = page.get_attribute(img, "src")
    page.select_option("#window", "21600")
    _settle(page, lambda: any(s is not None and abs(s - 3600) < 2 for s in spans), timeout=8)
    _settle(page, lambda: (page.get_attribute(img, "src") or first) != first, timeout=8)
    assert abs(_plot_span(page.get_attribute(img, "data-url")) - 3600) < 2
    # the next polls ask for no plot again (a moving range is not a new one)
    n = len(spans)
    page.wait_for_timeout(4000)
    assert len(spans) == n, spans


def test_rul_panel_says_why_a_trimmed_history_has_no_rul(chromium, served) -> None:
    """Check the panel shows the detail of ``history_trimmed`` (retention deleted the
    device's oldest readings, and the model needs its whole history): like ``no_model`` it
    was an empty box, so the RUL vanished with no word why."""
    env, base = served
    detail = ("Device 'pump-1' readings before 2026-11-01T00:00:00Z were deleted "
              "(retention); the RUL model needs a unit's whole history.")
    page = _open(chromium, base, env.tokens["viewer"], "/#/device/pump-1",
                 lambda page: _fake_rul(page, rul=None, low=None, high=None,
                                        reason="history_trimmed", detail=detail))
    box = page.wait_for_selector("#device-rul[data-rul-reason='history_trimmed']")
    assert detail in box.inner_text()
