"""The label queue page in a real headless Chromium (Debian's), driven by Playwright."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from edgewise.label.store import LabelStore
from tests.server.conftest import Env, build_env, serve_in_thread
from tests.server.test_dashboard_browser import _wait_for
from tests.server.test_labels_api import _send_history

pytestmark = pytest.mark.browser


@pytest.fixture
def live(data_dir: Path) -> Iterator[tuple[Env, str]]:
    gen = build_env(data_dir)
    env = next(gen)
    _send_history(env)
    with serve_in_thread(env.client.app) as port:
        yield env, f"http://127.0.0.1:{port}"
    gen.close()


def test_label_queue_charts_and_one_click_labels(chromium, live) -> None:
    """Check each proposed window is charted with its context and one click stores a label."""
    env, base = live
    page = chromium.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.goto(base + "/static/labels.html")
    page.evaluate(f"localStorage.setItem('edgewise.token', {env.tokens['operator']!r})")
    page.goto(base + "/static/labels.html?device=pump-1&k=4")
    page.wait_for_selector("section.queue-item")
    cards = page.query_selector_all("section.queue-item")
    assert len(cards) == 4
    for card in cards:
        charts = card.query_selector_all("svg[data-metric]")
        assert {c.get_attribute("data-metric") for c in charts} == {"temp_c", "vib_mm_s"}
        assert all(int(c.get_attribute("data-points")) >= 20 for c in charts)
        band = charts[0].query_selector("rect[data-window]")
        assert float(band.get_attribute("width")) > 1
        assert charts[0].query_selector("polyline").get_attribute("points").count(",") >= 20
    first = cards[0]
    start_ns = int(first.get_attribute("data-window"))
    first.query_selector("button[data-label='normal']").click()
    page.wait_for_selector(f"section.queue-item[data-window='{start_ns}'][data-labelled='normal']")
    store = LabelStore(env.settings.data_dir)
    _wait_for(lambda: any(lab.start_ns == start_ns for lab in store.labels("pump-1")))
    second = cards[1]
    second.query_selector("input[data-fault]").fill("seal_leak")
    second.query_selector("button[data-label='fault']").click()
    page.wait_for_selector("section.queue-item[data-labelled='seal_leak']")
    assert sorted(lab.label for lab in store.labels("pump-1")) == ["normal", "seal_leak"]
    assert len([e for e in env.security.audit_log(50) if e.action == "label.add"]) == 2
    assert errors == []
    page.close()


def test_viewer_cannot_label_from_the_queue(chromium, live) -> None:
    env, base = live
    page = chromium.new_page()
    page.goto(base + "/static/labels.html")
    page.evaluate(f"localStorage.setItem('edgewise.token', {env.tokens['viewer']!r})")
    page.goto(base + "/static/labels.html?device=pump-1&k=2")
    card = page.wait_for_selector("section.queue-item")
    card.query_selector("button[data-label='anomaly']").click()
    page.wait_for_selector("section.queue-item [data-status]:not(:empty)")
    assert LabelStore(env.settings.data_dir).labels("pump-1") == []
    page.close()
