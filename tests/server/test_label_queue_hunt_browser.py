"""The label queue page in a real headless Chromium: the exact window is labelled (its
nanosecond times are above 2**53, which JSON.parse rounds), and a sensor that stopped is
said, not drawn as a flat line (see test_label_queue_hunt)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgewise.label.store import LabelStore
from tests.server.conftest import Env, build_env, serve_in_thread
from tests.server.test_dashboard_browser import _wait_for
from tests.server.test_label_queue_hunt import send_queue_history

pytestmark = pytest.mark.browser


@pytest.fixture
def served(data_dir: Path) -> Iterator[tuple[Env, str]]:
    gen = build_env(data_dir)
    env = next(gen)
    send_queue_history(env)
    with serve_in_thread(env.client.app) as port:
        yield env, f"http://127.0.0.1:{port}"
    gen.close()


def _open(chromium, env: Env, base: str, k: int):
    """The queue page of pump-1's ``k`` windows, and the items its queue answer held (read
    here exactly: the mix strategy may propose other windows at the next call)."""
    page = chromium.new_page(viewport={"width": 1280, "height": 900})
    page.goto(base + "/static/labels.html")
    page.evaluate(f"localStorage.setItem('edgewise.token', {env.tokens['operator']!r})")
    with page.expect_response("**/v1/label-queue?*", timeout=30_000) as answer:
        page.goto(base + f"/static/labels.html?device=pump-1&k={k}")
    page.wait_for_selector("section.queue-item", timeout=30_000)
    return page, json.loads(answer.value.text())["items"]


def test_one_click_labels_the_exact_nanosecond_window(chromium, served) -> None:
    """Check 'Normal' stores the window the queue proposed to the nanosecond: the page sent
    JSON.parse's rounded start_ns/end_ns (-128/+132 ns here), and the label covered the
    next window's first reading."""
    env, base = served
    page, items = _open(chromium, env, base, 3)
    first = page.locator("section.queue-item").first
    assert first.get_attribute("data-window") == str(items[0]["start_ns"])
    first.locator("button[data-label='normal']").click()
    page.wait_for_selector("section.queue-item[data-labelled='normal']")
    store = LabelStore(env.settings.data_dir)
    _wait_for(lambda: store.labels("pump-1"))
    lab = store.labels("pump-1")[0]
    assert (lab.start_ns, lab.end_ns) == (items[0]["start_ns"], items[0]["end_ns"])
    page.close()


def test_a_stopped_sensor_is_said_not_drawn(chromium, served) -> None:
    """Check a window after temp stopped charts no temp line and says so ('temp (no
    readings here)'), while flow is drawn: it was a flat line of temp's last value."""
    env, base = served
    page, items = _open(chromium, env, base, 20)
    dead = [it for it in items if all(v is None for v in it["context"]["values"]["temp"])]
    assert dead
    card = page.locator(f"section.queue-item[data-window='{dead[0]['start_ns']}']")
    temp = card.locator("svg[data-metric='temp']")
    assert temp.get_attribute("data-points") == "0"
    assert temp.locator("text").text_content() == "temp (no readings here)"
    assert temp.locator("polyline").get_attribute("points") == ""
    assert int(card.locator("svg[data-metric='flow']").get_attribute("data-points")) >= 20
    page.close()
