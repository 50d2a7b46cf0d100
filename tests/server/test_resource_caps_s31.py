"""Session 31 resource caps of two read routes, proved by a hunt:

* ``GET /v1/devices/{id}/quality?start=2000-01-01T00:00:00Z`` read the whole history in
  one query (4 metrics of 1M readings: 102 s of CPU, +1.5 GB). It now reads at most
  ``MAX_READINGS`` (the JSON readings route's 200,000), the newest, and says so
  (``truncated``, ``reported_start``); so does its plot route.
* ``GET /v1/label-queue?device=`` pivoted the device's whole history, one column per
  metric (5,000 metrics: 85 s of CPU and a 74 MB answer). It now reads the newest
  200,000 readings and keeps at most 32 metrics (those with the most readings); the
  charts of its windows read only those metrics, each reading once (they read every
  metric of the device around each window: 1.4 million readings for 9 windows of a
  device of 2,000 metrics).
* The cap is one constant, :data:`edgewise.config.MAX_READINGS`, that the three routes
  reading readings refer to (it was written out three times).

Each test watches every read of the store the route makes and adds up its rows, so a
route that reads a whole history, or the same readings again and again, fails however
fast the machine.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from edgewise.label import workflow
from edgewise.server.routes import quality
from edgewise.telemetry import Reading
from tests.server.conftest import Env

S = 10**9


def watch_reads(monkeypatch: pytest.MonkeyPatch, env: Env) -> list[int]:
    """The number of rows of each ``store.query`` the app makes from now on."""
    sizes: list[int] = []
    real: Callable[..., list[Any]] = env.store.query

    def query(*args: Any, **kwargs: Any) -> list[Any]:
        rows = real(*args, **kwargs)
        sizes.append(len(rows))
        return rows

    monkeypatch.setattr(env.store, "query", query)
    return sizes


def store_history(env: Env, n: int, metrics: int = 4, t0: int | None = None) -> int:
    """``n`` readings of each of ``metrics`` metrics of pump-1, one a second, straight into
    the store (a long history without sending it); a spike in m1 near the end. Returns the
    first time (ns)."""
    t0 = t0 if t0 is not None else (time.time_ns() // S - n - 60) * S
    env.store.append([Reading(env.device, f"m{j}", t0 + i * S,
                              float(i % 7 + j + (40 if j == 1 and i == n - 30 else 0)))
                      for i in range(n) for j in range(metrics)])
    return t0


# -- GET /v1/devices/{id}/quality -------------------------------------------------------


def test_quality_report_reads_at_most_its_cap_the_newest_and_says_so(
        env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    """Check a range holding 12,000 readings, with the cap at 2,000, is reported over
    the newest 1,000..2,000 (every metric, the last reading included), ``truncated`` is
    true and ``reported_start`` is where that span starts; the store reads add up to at
    most two of the cap and one (the look-up that finds the range holds more, and the
    span found); the plot URLs are of that span and serve a PNG."""
    monkeypatch.setattr(quality, "MAX_READINGS", 2000, raising=True)
    t0 = store_history(env, 3000)
    last = t0 + 2999 * S
    sizes = watch_reads(monkeypatch, env)
    r = env.client.get(f"/v1/devices/{env.device}/quality",
                       params={"start": "2000-01-01T00:00:00Z"}, headers=env.auth("viewer"))
    assert r.status_code == 200, r.text
    rep = r.json()
    assert sizes and sum(sizes) <= 2 * 2001, sizes
    assert 1000 <= rep["readings"] <= 2000, rep["readings"]
    assert rep["truncated"] is True
    assert sorted(rep["metrics"]) == ["m0", "m1", "m2", "m3"]
    assert rep["start"] == "2000-01-01T00:00:00.000Z"
    (plot,) = [p for p in rep["plots"] if p["metric"] == "m1"]
    # the plot URL carries the span's start exactly; reported_start is it to the ms
    exact = quality.parse_instant(parse_qs(urlsplit(plot["url"]).query)["start"][0], "start")
    assert rep["reported_start"] == quality.format_ns(exact)
    assert t0 < exact <= last
    # the span reported is the newest: every reading from its start on is in it
    assert rep["readings"] == 4 * sum(1 for i in range(3000) if t0 + i * S >= exact)
    sizes.clear()
    png = env.client.get(plot["url"], headers=env.auth("viewer"))
    assert png.status_code == 200 and png.content[:4] == b"\x89PNG"
    assert sum(sizes) <= 2 * 2001, sizes


def test_quality_report_within_the_cap_is_whole_and_not_truncated(
        env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    """Check a range under the cap reads as before: every reading, not truncated,
    ``reported_start`` the range's start."""
    monkeypatch.setattr(quality, "MAX_READINGS", 2000, raising=True)
    t0 = store_history(env, 3000)
    start = t0 + 2700 * S
    r = env.client.get(f"/v1/devices/{env.device}/quality",
                       params={"start": str(start // S)}, headers=env.auth("viewer"))
    assert r.status_code == 200, r.text
    rep = r.json()
    assert rep["readings"] == 4 * 300 and rep["truncated"] is False
    assert rep["reported_start"] == rep["start"]


def test_quality_plot_reads_at_most_the_cap_of_one_metric(
        env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    """Check a plot over a range holding 3,000 readings of the metric, with the cap at
    1,000, reads no more than twice 1,001 rows in all and draws the newest (its spike)."""
    monkeypatch.setattr(quality, "MAX_READINGS", 1000, raising=True)
    store_history(env, 3000)
    sizes = watch_reads(monkeypatch, env)
    r = env.client.get(f"/v1/devices/{env.device}/quality/plots/m1.png",
                       params={"start": "2000-01-01T00:00:00Z"}, headers=env.auth("viewer"))
    assert r.status_code == 200, r.text
    assert sizes and sum(sizes) <= 2 * 1001, sizes


def test_quality_route_documents_its_cap() -> None:
    """Check the report's OpenAPI description names the cap and the fields that say so."""
    from edgewise.server.routes.quality import router

    (route,) = [r for r in router.routes if r.path == "/v1/devices/{device_id}/quality"]
    assert "200,000" in route.description
    assert "`truncated`" in route.description and "`reported_start`" in route.description


# -- GET /v1/label-queue ----------------------------------------------------------------


def _queue(env: Env, k: int = 3) -> dict[str, Any]:
    r = env.client.get("/v1/label-queue", params={"device": env.device, "k": k},
                       headers=env.auth("viewer"))
    assert r.status_code == 200, r.text
    return r.json()


def test_label_queue_reads_the_newest_readings_up_to_its_cap(
        env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    """Check a history of 240,000 readings (4 metrics) is read in at most 600,003 rows in
    all: the newest 200,000 found in two look-ups of at most 200,001, and the charts of
    its windows no more than it holds; the queue's windows are of its newest part."""
    t0 = store_history(env, 60_000)
    sizes = watch_reads(monkeypatch, env)
    items = _queue(env, k=10)["items"]
    assert items
    assert sum(sizes) <= 3 * 200_001, sizes
    # every window lies in the newest 200,000 readings (the last 50,000 s)
    assert min(it["start_ns"] for it in items) >= t0 + 10_000 * S
    assert workflow.MAX_READINGS == 200_000


def test_label_queue_charts_read_only_the_kept_metrics_each_reading_once(
        env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    """Check a device of 64 metrics of 500 readings (32,000, under the cap) is read in at
    most 48,000 rows in all: the history once, and for the charts of 10 windows at most
    the 16,000 readings of the 32 metrics it keeps. The charts read every metric of the
    device around each window, the same readings again for overlapping windows (80,000
    rows here; 1.4 million for 9 windows of a device of 2,000 metrics)."""
    store_history(env, 500, metrics=64)
    sizes = watch_reads(monkeypatch, env)
    body = _queue(env, k=10)
    assert len(body["items"]) == 10
    assert all(len(it["context"]["values"]) == 32 for it in body["items"])
    assert sum(sizes) <= 500 * 64 + 500 * 32, (sum(sizes), sizes)


def test_label_queue_keeps_at_most_32_metrics_those_with_most_readings(
        env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    """Check a device that sent 300 metrics once each beside 4 real ones is queued on 32
    metrics at most, the 4 real ones among them: each item's context holds no more."""
    t0 = store_history(env, 400)
    env.store.append([Reading(env.device, f"junk{i:04d}", t0 + i * S + 1, 1.0 + i % 5)
                      for i in range(300)])
    body = _queue(env, k=5)
    assert body["items"]
    for it in body["items"]:
        names = set(it["context"]["values"])
        assert len(names) <= 32, len(names)
        assert {"m0", "m1", "m2", "m3"} <= names
    assert workflow.MAX_METRICS == 32


def test_the_readings_cap_is_written_once() -> None:
    """Check the quality report, the label queue and the JSON readings route take their
    cap from :data:`edgewise.config.MAX_READINGS` (it was 200_000 written in each)."""
    import inspect

    from edgewise import config
    from edgewise.server.routes import readings

    assert config.MAX_READINGS == 200_000
    for module, name in ((quality, "MAX_READINGS"), (workflow, "MAX_READINGS"),
                         (readings, "MAX_POINTS")):
        assert getattr(module, name) == config.MAX_READINGS, module.__name__
        assert "200_000" not in inspect.getsource(module), module.__name__
        assert f"{name} = config.MAX_READINGS" in inspect.getsource(module), module.__name__


def test_history_from_store_caps_lift_with_none(env: Env) -> None:
    """Check ``max_readings=None, max_metrics=None`` reads the whole history, as before
    the caps (what a caller that wants it passes)."""
    store_history(env, 100, metrics=40)
    ts, X, metrics = workflow.history_from_store(env.store, env.device)
    assert len(metrics) == 32 and len(ts) == 100
    ts, X, metrics = workflow.history_from_store(env.store, env.device, max_readings=None,
                                                 max_metrics=None)
    assert len(metrics) == 40 and X.shape == (100, 40)
    ts, X, metrics = workflow.history_from_store(env.store, env.device, max_readings=400)
    assert X.size <= 400 and int(ts[-1]) == int(ts.max())
