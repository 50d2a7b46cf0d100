"""The quality report's plot URLs: their range is the report's to the nanosecond (it was
``f"{ns / 1e9:.9f}"``, which float64 rounds by up to ~0.2 us today, so the plot of a
flagged reading at the range's start was a 404); the plots' figures keep the int64 times
(readings 100 ns apart fell on one time through float64: 24 times, 36 conflicts); a reading
near the float maximum is drawn (it was a 500), and a plot that cannot be drawn is a
problem answer, not a 500."""

from __future__ import annotations

import time

import numpy as np
from fastapi.testclient import TestClient

import edgewise.quality.plot as plot
from edgewise.quality.report import metric_issues
from edgewise.server.routes.quality import _issues
from edgewise.telemetry import Reading
from tests.server.conftest import Env, problem


def test_the_plot_url_keeps_the_range_to_the_nanosecond(env: Env) -> None:
    base = 1_700_000_000_999_999_999
    env.store.append([Reading(env.device, "temp", base + i * 10**9,
                              500.0 if i == 0 else 20.0 + (i % 3) / 10) for i in range(60)])
    rep = env.client.get(f"/v1/devices/{env.device}/quality",
                         params={"start": str(base), "end": str(base + 60 * 10**9)},
                         headers=env.auth("viewer")).json()
    assert rep["metrics"]["temp"]["spikes"] == 1
    [p] = rep["plots"]
    assert p["url"].endswith("?start=2023-11-14T22:13:20.999999999Z"
                             "&end=2023-11-14T22:14:20.999999999Z"), p["url"]
    r = env.client.get(p["url"], headers=env.auth("viewer"))
    assert r.status_code == 200, r.text
    assert r.content[:4] == b"\x89PNG"


def test_plot_figures_keep_int64_times() -> None:
    rows = [("m", 1_700_000_000_000_000_000 + i * 100, 20.0 + (i % 3) / 10) for i in range(60)]
    got = _issues(rows)["m"]["figures"]
    want = metric_issues(np.array([r[1] for r in rows]), np.array([r[2] for r in rows]))
    assert (got["distinct_times"], got["conflicts"]) == (60, 0)
    assert got == want["figures"]


def _extreme(env: Env) -> tuple[TestClient, str]:
    t0 = int(time.time()) - 600
    assert env.send([{"ts": t0 + i, "seq": i + 1,
                      "metrics": {"temp": 1.7e308 if i == 30 else 20.0 + (i % 3) / 10}}
                     for i in range(60)]).status_code == 200
    env.pipeline.flush()
    client = TestClient(env.client.app, raise_server_exceptions=False)
    rep = client.get(f"/v1/devices/{env.device}/quality", params={"start": str(t0 - 1)},
                     headers=env.auth("viewer")).json()
    [p] = rep["plots"]
    return client, p["url"]


def test_a_reading_near_the_float_maximum_is_plotted(env: Env) -> None:
    client, url = _extreme(env)
    with client:
        r = client.get(url, headers=env.auth("viewer"))
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/png" and r.content[:4] == b"\x89PNG"


def test_a_plot_that_cannot_be_drawn_is_a_problem(env: Env, monkeypatch) -> None:
    def broken(*args, **kwargs):
        raise ValueError("arange: cannot compute length")

    monkeypatch.setattr(plot, "plot_issues", broken)
    client, url = _extreme(env)
    with client:
        body = problem(client.get(url, headers=env.auth("viewer")), 422)
    assert body["reason"] == "plot_failed" and body["value"] == "temp"
    assert "ValueError: arange: cannot compute length" in body["detail"]
