"""The dashboard in a real headless Chromium (Debian's), driven by Playwright.

Skips with a reason where /usr/bin/chromium is absent; fails instead in CI (``CI=true``).
The ``chromium`` fixture (one browser per module, a test's contexts closed after it) is in
tests/server/conftest.py.
"""

from __future__ import annotations

import contextlib
import os
import struct
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from edgewise.store.base import Alert
from edgewise.telemetry import Reading
from tests.server.conftest import Env, build_env, serve_in_thread

pytestmark = pytest.mark.browser

# The chart's plot area inside the canvas, in CSS pixels (PAD in app.js).
PAD_LEFT, PAD_RIGHT, PAD_TOP, PAD_BOTTOM = 56, 10, 8, 22


def decode_png(data: bytes) -> np.ndarray:
    """Pixels (H, W, channels) of an 8-bit non-interlaced PNG, as Chromium writes them."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width = 8, b"", 0
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        chunk = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, color, _, _, interlace = struct.unpack(">IIBBBBB", chunk)
            assert depth == 8 and interlace == 0 and color in (2, 6), (depth, color, interlace)
            channels = 3 if color == 2 else 4
        elif kind == b"IDAT":
            idat += chunk
        pos += 12 + length
    raw = zlib.decompress(idat)
    stride = width * channels
    out = np.zeros((height, stride), dtype=np.uint8)
    prev = np.zeros(stride, dtype=np.int32)
    for y in range(height):
        ftype = raw[y * (stride + 1)]
        line = np.frombuffer(raw, np.uint8, stride, y * (stride + 1) + 1).astype(np.int32)
        if ftype == 0:
            cur = line
        elif ftype == 2:
            cur = (line + prev) & 0xFF
        else:  # Sub, Average, Paeth depend on the left neighbour: go pixel by pixel
            cur = np.zeros(stride, dtype=np.int32)
            for i in range(stride):
                a = cur[i - channels] if i >= channels else 0
                b = prev[i]
                c = prev[i - channels] if i >= channels else 0
                if ftype == 1:
                    pred = a
                elif ftype == 3:
                    pred = (a + b) // 2
                else:
                    p = a + b - c
                    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                    pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                cur[i] = (line[i] + pred) & 0xFF
        out[y] = cur
        prev = cur
    return out.reshape(height, width, channels)


@contextlib.contextmanager
def serve_live(data_dir: Path) -> Iterator[tuple[Env, str, Alert]]:
    """A served app with pump-1 (5 min of 3 metrics, a spike, an open alert) and silent pump-2."""
    gen = build_env(data_dir)
    env = next(gen)
    try:
        env.security.add_device("pump-2")
        now = int(time.time())
        batch = [{"ts": now - 300 + i, "seq": i + 1,
                  "metrics": {"temp_c": 40 + 2 * np.sin(i / 20) + (25 if 240 <= i < 246 else 0),
                              "rpm": 1450 + (i % 7), "vib_mm_s": 2.0 + 0.01 * i}}
                 for i in range(300)]
        assert env.send(batch).json()["accepted"] == 900
        # scored before any test looks: the pipeline's own alert on the spike is in the store
        # (it came in the background; a test reading the alerts at once could miss it)
        assert env.pipeline.flush(), "the 900 readings were not scored in 30 s"
        alert = env.store.add_alert(Alert("pump-1", (now - 60) * 10**9, (now - 54) * 10**9,
                                          0.99, drivers={"temp_c": 1.0}, message="temp spike"))
        _rul_model(env.settings.data_dir / "models" / "rul-v1.ewm")
        with serve_in_thread(env.client.app) as port:
            yield env, f"http://127.0.0.1:{port}", alert
    finally:
        gen.close()


@pytest.fixture
def live(data_dir: Path) -> Iterator[tuple[Env, str, Alert]]:
    """:func:`serve_live` of the test's own: for a test that changes what is served."""
    with serve_live(data_dir) as got:
        yield got


@pytest.fixture(scope="module")
def shared_live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Env, str, Alert]]:
    """:func:`serve_live` shared by a module's tests that only look (no verdict, no reading
    sent, no device added): each in a browser context of its own."""
    with serve_live(tmp_path_factory.mktemp("live")) as got:
        yield got


_RUL_FILE: list[bytes] = []  # the model file, trained once: the same bytes every time


def _rul_model(path: Path) -> None:
    """A small RUL model on pump-1's metrics, trained on synthetic run-to-failure units
    (seeded: trained once per process, then the same file is written again)."""
    if not _RUL_FILE:
        _RUL_FILE.append(_train_rul_model())
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(_RUL_FILE[0])


def _train_rul_model() -> bytes:
    import tempfile

    import pandas as pd

    from edgewise.models.rul import RULModel

    rng = np.random.default_rng(0)
    frames = []
    for u in range(12):
        life = int(rng.integers(80, 140))
        wear = (np.arange(life) / life) ** 2
        frames.append(pd.DataFrame({
            "unit": u, "cycle": np.arange(1, life + 1),
            "temp_c": 40 + 15 * wear + rng.normal(0, 0.3, life),
            "rpm": 1450 - 30 * wear + rng.normal(0, 2, life),
            "vib_mm_s": 2 + 6 * wear + rng.normal(0, 0.1, life)}))
    model = RULModel(window=10, n_estimators=40, learning_rate=0.1, random_state=0)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "rul-v1.ewm"
        model.fit(pd.concat(frames, ignore_index=True)).save(path)
        return path.read_bytes()


def _wait_for(check, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.1)


def test_dashboard_fleet_chart_and_alert_actions(chromium, live) -> None:
    """Check the fleet lists devices, the chart draws, and ack/label in the page reach the store."""
    env, base, alert = live
    page = chromium.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.goto(base + "/")

    # token entry: a wrong one is refused, the operator's is kept
    page.fill("#token", "ew_wrong")
    page.click("#login-form button")
    page.wait_for_selector("#login-error:has-text('not valid')")
    errors.clear()  # the refused /v1/me call logs a 401 in the console
    page.fill("#token", env.tokens["operator"])
    page.click("#login-form button")
    page.wait_for_selector("#who:has-text('operator')")
    assert page.evaluate("localStorage.getItem('edgewise.token')") == env.tokens["operator"]

    # fleet overview
    page.wait_for_selector("tr[data-device='pump-1']")
    assert page.inner_text("tr[data-device='pump-1'] [data-health]") == "alerting"
    assert page.inner_text("tr[data-device='pump-2'] [data-health]") == "silent"

    # device page: the temperature chart draws, with the alert span
    page.click("tr[data-device='pump-1'] a")
    canvas = page.wait_for_selector("canvas[data-metric='temp_c'][data-points]")
    _wait_for(lambda: int(canvas.get_attribute("data-points") or 0) >= 20)
    # the RUL line arrives after the charts and pushes them down: an element screenshot taken
    # while it lands clips the wrong rows ("only 30 line pixels"), so let the layout settle
    rul = page.wait_for_selector("#device-rul[data-rul]")
    assert int(canvas.get_attribute("data-spans")) >= 1
    assert page.query_selector("canvas[data-metric='rpm']") is not None
    shot = canvas.screenshot()
    if os.environ.get("EDGEWISE_SCREENSHOT_DIR"):  # to look at it
        page.screenshot(path=os.path.join(os.environ["EDGEWISE_SCREENSHOT_DIR"], "device.png"))
    png = decode_png(shot)
    h, w = png.shape[:2]
    box = canvas.bounding_box()
    sx, sy = w / box["width"], h / box["height"]
    plot = png[int(PAD_TOP * sy) + 2:h - int(PAD_BOTTOM * sy) - 2,
               int(PAD_LEFT * sx) + 2:w - int(PAD_RIGHT * sx) - 2, :3].astype(int)
    r, g, b = plot[..., 0], plot[..., 1], plot[..., 2]
    line = (b > 180) & (r < 120) & (b - r > 80)          # the series' blue
    span = (r > 200) & (g < 200) & (b < 200) & (r - b > 30)  # the open alert's red wash
    assert line.sum() > 200, f"only {line.sum()} line pixels in the plot area"
    assert span.sum() > 50, f"only {span.sum()} alert-span pixels in the plot area"

    # device page: the RUL line, from the RUL model file in the data dir
    assert "Remaining useful life" in rul.inner_text() and "interval" in rul.inner_text()

    # device page: the data-quality table, from GET /v1/devices/{id}/quality
    page.wait_for_selector("#device-quality tr[data-metric='temp_c']")
    cells = page.query_selector_all("#device-quality tr[data-metric='temp_c'] td")
    # complete but for the silence since its last reading (the window ends now: seconds
    # pass before the page asks, and a device that stopped is missing its readings)
    shown = cells[1].inner_text()
    assert shown.endswith(" %") and 90.0 <= float(shown[:-2]) <= 100.0, [
        c.inner_text() for c in cells]
    assert "spike" in cells[7].inner_text()  # the 25 °C jump, flagged by the cleaner
    assert page.query_selector("#device-quality tr[data-metric='rpm']") is not None

    # alerts page: acknowledge, then label as false alarm; both reach the store
    page.goto(base + "/#/alerts")
    row = f"tr[data-alert='{alert.id}']"
    page.wait_for_selector(row)
    page.click(f"{row} button[data-action='ack']")
    _wait_for(lambda: env.store.get_alert(alert.id).status == "acknowledged")
    assert env.store.get_alert(alert.id).acked_by == "test-operator"
    page.select_option("#status-filter", "")
    page.wait_for_selector(f"{row}[data-status='acknowledged']")
    page.click(f"{row} button[data-action='false_alarm']")
    _wait_for(lambda: env.store.get_alert(alert.id).label == "false_alarm")
    page.wait_for_selector(f"{row}[data-label='false_alarm']")
    labels = env.client.get("/v1/labels", params={"device": "pump-1"},
                            headers=env.auth("viewer")).json()
    assert [(x["label"], x["start_ns"]) for x in labels] == [("normal", alert.start_ns)]
    assert errors == []
    page.close()


def test_chart_draws_a_metric_in_small_units_at_its_own_scale(chromium, live) -> None:
    """Check a leak current stored in amperes (nA-level values) gets a value axis around
    its own range, not a flat line in a band of +-1; a constant metric gets a band around
    its level."""
    env, base, _ = live
    sec = env.client.post("/v1/devices", json={"name": "pump-3"},
                          headers=env.auth("admin")).json()["secret"]
    now = int(time.time())
    leak = [1e-10 * (5 + np.sin(i / 10)) for i in range(120)]  # 0.4-0.6 nA
    batch = [{"ts": now - 120 + i, "seq": i + 1, "metrics": {"leak_a": leak[i], "mode": 3.0}}
             for i in range(120)]
    assert env.send(batch, device="pump-3", secret=sec).json()["accepted"] == 240
    page = chromium.new_page(viewport={"width": 1280, "height": 900})
    page.goto(base + "/")
    page.fill("#token", env.tokens["viewer"])
    page.click("#login-form button")
    page.goto(base + "/#/device/pump-3")
    canvas = page.wait_for_selector("canvas[data-metric='leak_a'][data-points]")
    _wait_for(lambda: int(canvas.get_attribute("data-points") or 0) >= 20)
    lo, hi = float(canvas.get_attribute("data-lo")), float(canvas.get_attribute("data-hi"))
    assert lo < min(leak) and hi > max(leak) and hi - lo < 4e-10, (lo, hi)
    flat = page.wait_for_selector("canvas[data-metric='mode'][data-points]")
    assert (float(flat.get_attribute("data-lo")), float(flat.get_attribute("data-hi"))) == (
        pytest.approx(2.652), pytest.approx(3.348))  # +-10 %, then the 8 % margin
    page.close()


def test_viewer_sees_alert_buttons_disabled(chromium, shared_live) -> None:
    """Check a viewer token can look but the ack/label buttons are disabled."""
    env, base, alert = shared_live
    page = chromium.new_page()
    page.goto(base + "/")
    page.fill("#token", env.tokens["viewer"])
    page.click("#login-form button")
    page.goto(base + "/#/alerts")
    button = page.wait_for_selector(f"tr[data-alert='{alert.id}'] button[data-action='ack']")
    assert button.is_disabled()
    assert env.store.get_alert(alert.id).status == "open"
    page.close()


def test_dashboard_draws_signed_explanations_and_quality_plots(chromium, live) -> None:
    """Check the device page draws the RUL's signed sensor bars (pushing left for a negative
    contribution, right for a positive one, as the API says), shows each flagged metric's
    quality PNG as a loaded <img>, and the alerts page draws the alert's T² contributions."""
    env, base, alert = live
    now = time.time()
    # two isolated spikes of a metric the RUL model does not use: a quality plot (spikes of
    # one it uses would make the RUL unscorable: its whole-history trend reads every row)
    t_end = int(now)
    env.store.append([Reading("pump-1", "flow_l_s", (t_end - 300 + i) * 10**9,
                              12.0 + 0.1 * (i % 5)) for i in range(300)]
                     + [Reading("pump-1", "flow_l_s", int((now - back) * 1e9), 5000.0)
                        for back in (150.5, 80.5)])
    page = chromium.new_page(viewport={"width": 1280, "height": 1400})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.goto(base + "/")
    page.fill("#token", env.tokens["viewer"])
    page.click("#login-form button")
    page.goto(base + "/#/device/pump-1")

    api = env.client.get("/v1/devices/pump-1/rul", headers=env.auth("viewer")).json()
    ex = api["explanation"]
    assert abs(ex["base"] + sum(ex["contributions"].values()) - ex["value"]) < 1e-3
    page.wait_for_selector("#rul-explain .bar-row")
    rows = page.query_selector_all("#rul-explain .bar-row")
    assert [r.get_attribute("data-name") for r in rows] == [t["name"] for t in ex["top"]]
    biggest = max(abs(t["value"]) for t in ex["top"])
    signs = set()
    for r in rows:
        value = float(r.get_attribute("data-value"))
        track = r.query_selector(".bar-track").bounding_box()
        bar = r.query_selector(".bar-track i").bounding_box()
        mid = track["x"] + track["width"] / 2
        # the bar's length is proportional to |value|, from the middle outwards
        assert abs(bar["width"] - track["width"] / 2 * abs(value) / biggest) < 1.5
        if value > 0:
            assert abs(bar["x"] - mid) < 1
        elif value < 0:
            assert abs(bar["x"] + bar["width"] - mid) < 1
        signs.add(value > 0)
    assert signs == {True, False}, "expected contributions of both signs"

    q = env.client.get("/v1/devices/pump-1/quality", headers=env.auth("viewer")).json()
    flagged = [p["metric"] for p in q["plots"]]
    assert "flow_l_s" in flagged, q["plots"]
    img = page.wait_for_selector(f"#quality-plots figure[data-metric='{flagged[0]}'] img[src]")
    _wait_for(lambda: img.evaluate("i => i.complete && i.naturalWidth > 0"))
    assert img.evaluate("i => i.naturalWidth") == 800  # plot_issues: 8 in x 100 dpi
    if os.environ.get("EDGEWISE_SCREENSHOT_DIR"):
        page.screenshot(path=os.path.join(os.environ["EDGEWISE_SCREENSHOT_DIR"], "explain.png"),
                        full_page=True)

    page.goto(base + "/#/alerts")
    bars = page.wait_for_selector(f"[data-explain-for='{alert.id}'] .bar-row")
    detail = env.client.get(f"/v1/alerts/{alert.id}", headers=env.auth("viewer")).json()
    assert bars.get_attribute("data-name") == detail["explanation"]["top"][0]["name"] == "temp_c"
    assert float(bars.get_attribute("data-value")) > 0
    assert errors == []
    page.close()


def test_api_docs_render_without_internet(chromium, shared_live) -> None:
    """Swagger UI at /docs draws the API's operations with no outside request (this machine,
    like an air-gapped site, reaches no CDN)."""
    _, base, _ = shared_live
    ctx = chromium.new_context()
    page = ctx.new_page()
    outside: list[str] = []
    page.on("request", lambda r: outside.append(r.url) if not r.url.startswith(base) else None)
    page.goto(f"{base}/docs")
    page.wait_for_selector(".opblock", timeout=15000)
    assert page.locator(".opblock").count() > 20
    assert outside == []
    ctx.close()
