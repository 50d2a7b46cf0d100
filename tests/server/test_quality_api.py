"""GET /v1/devices/{id}/quality and the cleaner in front of detection."""

from __future__ import annotations

import time

import numpy as np

from edgewise.quality.report import device_report
from edgewise.telemetry import Reading
from tests.server.conftest import Env, problem


def test_quality_report_counts_faults_and_cleaner_keeps_storage_exactly_once(env: Env) -> None:
    """Check a stuck metric and spikes show in the report; a re-delivered batch is stored
    once and scored once (the cleaner removes it before detection, counted by reason)."""
    t0 = int(time.time()) - 900
    rng = np.random.default_rng(0)
    batch = []
    for i in range(600):
        b = float(20 + rng.normal(0, 0.1) + (15 if i in (200, 350, 500) else 0))
        a = 7.0 if 300 <= i < 360 else float(5 + rng.normal(0, 0.1))  # stuck for 60 readings
        batch.append({"ts": t0 + i, "seq": i + 1, "metrics": {"a": a, "b": b}})
    assert env.send(batch).json()["accepted"] == 1200
    assert env.pipeline.flush()
    assert env.send(batch[-1:]).status_code == 200  # re-delivered after a lost ack
    assert env.pipeline.flush()
    assert env.store.count_readings() == 1200
    m = env.pipeline.metrics
    assert m.get("edgewise_readings_scored_total") == 1200  # not 1202
    assert m.get("edgewise_quality_removed_total", reason="duplicate") == 2

    r = env.client.get(f"/v1/devices/{env.device}/quality", headers=env.auth("viewer"))
    assert r.status_code == 200, r.text
    rep = r.json()
    assert rep["device_id"] == env.device and rep["readings"] == 1200
    assert rep["metrics"]["a"]["stuck"] > 0 and rep["metrics"]["b"]["stuck"] == 0
    assert rep["metrics"]["b"]["spikes"] >= 3 and rep["metrics"]["a"]["spikes"] <= 1
    # the live window ends now: the device's last 5 minutes of silence are a gap of each
    # metric, and the readings missing there count
    assert rep["summary"]["gaps"] == 2 and rep["summary"]["completeness"] < 0.7
    rows = [Reading(env.device, k, (t0 + i) * 10**9, float(v))
            for i, x in enumerate(batch) for k, v in x["metrics"].items()]
    r = env.client.get(f"/v1/devices/{env.device}/quality", params={"end": str(t0 + 600)},
                       headers=env.auth("viewer"))
    assert r.json()["summary"] == device_report(rows)["summary"]  # same checks as offline
    ing = rep["ingest"]["metrics"]
    assert ing["a"]["seen"] == 601 and ing["a"]["kept"] == 600
    assert ing["a"]["removed"] == {"duplicate": 1}
    assert ing["a"]["flagged"].get("stuck", 0) > 0
    assert ing["b"]["flagged"].get("spike", 0) >= 3

    # a window with nothing in it, a bad range, an unknown device
    r = env.client.get(f"/v1/devices/{env.device}/quality", params={"end": str(t0)},
                       headers=env.auth("viewer"))
    assert r.json()["readings"] == 0
    problem(env.client.get(f"/v1/devices/{env.device}/quality",
                           params={"start": str(t0 + 10), "end": str(t0)},
                           headers=env.auth("viewer")), 422)
    problem(env.client.get("/v1/devices/nope/quality", headers=env.auth("viewer")), 404)
    problem(env.client.get(f"/v1/devices/{env.device}/quality"), 401)


def test_quality_plots_of_flagged_metrics_are_pngs(env: Env) -> None:
    """Check the report lists a plot for each flagged metric only, each URL serves a PNG of
    that metric, and a clean or unknown metric (or device) is a 404 problem."""
    t0 = int(time.time()) - 600
    rng = np.random.default_rng(1)
    batch = [{"ts": t0 + i, "seq": i + 1,
              "metrics": {"spiky": float(20 + rng.normal(0, 0.1) + (15 if i in (100, 300) else 0)),
                          "clean": float(5 + 0.01 * i + rng.normal(0, 0.05)),
                          "line-a/flow": float(3 + rng.normal(0, 0.01) + (9 if i == 200 else 0))}}
             for i in range(400)]
    assert env.send(batch).json()["accepted"] == 1200
    start, end = str(t0 - 1), str(t0 + 401)
    rep = env.client.get(f"/v1/devices/{env.device}/quality", params={"start": start, "end": end},
                         headers=env.auth("viewer")).json()
    assert rep["metrics"]["clean"]["spikes"] == 0 and rep["metrics"]["spiky"]["spikes"] >= 2
    assert [p["metric"] for p in rep["plots"]] == ["line-a/flow", "spiky"]
    assert rep["plots"][1]["flagged"]["spike"] >= 2
    for plot in rep["plots"]:  # a metric name may hold '/': its URL was a 404
        r = env.client.get(plot["url"], headers=env.auth("viewer"))
        assert r.status_code == 200, (plot, r.text)
    r = env.client.get(rep["plots"][1]["url"], headers=env.auth("viewer"))
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/png"
    assert r.content[:8] == b"\x89PNG\r\n\x1a\n" and len(r.content) > 5000
    url = f"/v1/devices/{env.device}/quality/plots/{{}}.png"
    params = {"start": start, "end": end}
    body = problem(env.client.get(url.format("clean"), params=params,
                                  headers=env.auth("viewer")), 404)
    assert body["reason"] == "no_plot" and "'clean'" in body["detail"]
    assert "no such metric" in problem(env.client.get(url.format("nope"), params=params,
                                                      headers=env.auth("viewer")), 404)["detail"]
    problem(env.client.get("/v1/devices/nope/quality/plots/spiky.png",
                           headers=env.auth("viewer")), 404)
    problem(env.client.get(url.format("spiky")), 401)


def test_a_metric_silent_over_the_range_has_its_gap_but_no_plot_as_documented(
        env: Env) -> None:
    """Check what the docs say of a metric with no reading in the range: the report lists
    it with 0 readings and the range one gap, ``plots`` has no entry for it (there is no
    series to draw) and its plot URL is a 404 ``no_plot``; the docs said ``plots`` listed
    every metric with gaps in the range."""
    from edgewise.server.routes import quality

    now = time.time_ns()
    env.store.append([Reading(env.device, "a", now - 7200 * 10**9 + i * 60 * 10**9, 1.0 + i % 3)
                      for i in range(119)])
    env.store.append([Reading(env.device, "b", now - 7200 * 10**9 + i * 60 * 10**9, 2.0)
                      for i in range(30)])  # silent for the last 1.5 h
    rep = env.client.get(f"/v1/devices/{env.device}/quality", headers=env.auth("viewer")).json()
    assert (rep["metrics"]["b"]["readings"], rep["metrics"]["b"]["gaps"]) == (0, 1)
    assert "b" not in [p["metric"] for p in rep["plots"]]
    body = problem(env.client.get(f"/v1/devices/{env.device}/quality/plots/b.png",
                                  headers=env.auth("viewer")), 404)
    assert body["reason"] == "no_plot"
    doc = " ".join((quality.__doc__ or "").split())
    assert "one with no reading in the range" in doc
    paths = env.client.get("/openapi.json").json()["paths"]
    assert "silent over the whole range" in paths[
        "/v1/devices/{device_id}/quality"]["get"]["description"]
    assert "silent over the whole range" in paths[
        "/v1/devices/{device_id}/quality/plots/{metric}.png"]["get"]["description"]
