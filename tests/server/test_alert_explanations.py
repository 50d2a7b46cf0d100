"""GET /v1/alerts/{id}: signed, exact per-metric contributions of a multivariate alert."""

from __future__ import annotations

import numpy as np

from edgewise.server.query import format_ns
from edgewise.store.base import Alert
from edgewise.telemetry import Reading
from tests.server.conftest import Env, problem

T0 = 1_700_000_000 * 10**9
S = 10**9


def _pump(env: Env, n: int = 300) -> np.ndarray:
    """Flow and pressure move together for ``n`` seconds; then pressure drops while flow rises."""
    rng = np.random.default_rng(0)
    flow = rng.normal(10, 1, n)
    pressure = 2 * flow + rng.normal(0, 0.2, n)
    temp = rng.normal(40, 0.5, n)
    flow[-5:], pressure[-5:] = 12.0, 16.0  # relationship broken: flow up, pressure down
    x = np.column_stack([flow, pressure, temp])
    env.store.append([Reading(env.device, m, T0 + i * S, float(x[i, j]))
                      for i in range(n) for j, m in enumerate(["flow", "pressure", "temp"])])
    return x


def test_multivariate_alert_has_signed_contributions_summing_to_t2(env: Env) -> None:
    """Check the detail carries per-metric terms that sum to the peak's T², equal an
    independent T² of the peak against the hour before, and are signed."""
    x = _pump(env)
    alert = env.store.add_alert(Alert(env.device, T0 + 295 * S, T0 + 299 * S, 0.99,
                                      drivers={"pressure": 0.6, "flow": 0.4}))
    r = env.client.get(f"/v1/alerts/{alert.id}", headers=env.auth("viewer"))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["id"] == alert.id and body["explanation_detail"] is None
    ex = body["explanation"]
    assert ex["method"] == "t2_exact" and ex["base"] == 0.0
    assert set(ex["contributions"]) == {"flow", "pressure", "temp"}
    total = ex["base"] + sum(ex["contributions"].values())
    assert abs(total - ex["value"]) < 1e-4 * max(1.0, ex["value"])
    # independently: T² of the peak row against the 295 rows before, shrunk covariance
    ref = x[:295]
    cov = np.cov(ref, rowvar=False)
    cov = 0.99 * cov + np.diag(0.01 * np.diag(cov))
    d = x[295:] - ref.mean(axis=0)
    t2 = np.einsum("ij,ij->i", d, np.linalg.solve(cov, d.T).T)
    assert abs(float(t2.max()) - ex["value"]) < 1e-3 * ex["value"]
    assert ex["peak"] == format_ns(T0 + (295 + int(t2.argmax())) * S)
    assert ex["value"] > 100 and ex["reference_rows"] == 295
    top = ex["top"]
    assert {t["name"] for t in top[:2]} == {"flow", "pressure"}
    # the shares rank the metrics (the order of top): non-negative, summing to 1
    assert set(ex["shares"]) == {"flow", "pressure", "temp"}
    assert abs(sum(ex["shares"].values()) - 1.0) < 1e-5
    assert [t["name"] for t in top] == sorted(ex["shares"], key=lambda k: -ex["shares"][k])
    assert abs(ex["contributions"]["temp"]) < 0.05 * ex["value"]

    listed = env.client.get("/v1/alerts", params={"explain": "true"},
                            headers=env.auth("viewer")).json()
    assert listed[0]["explanation"] == ex
    plain = env.client.get("/v1/alerts", headers=env.auth("viewer")).json()
    assert "explanation" not in plain[0]


def test_explanation_is_null_with_a_reason_when_it_cannot_be_made(env: Env) -> None:
    """Check a seq-gap alert and an alert with no history before it explain why not."""
    _pump(env, n=30)
    gap = env.store.add_alert(Alert(env.device, T0, T0 + S, 1.0, kind="seq_gap"))
    early = env.store.add_alert(Alert(env.device, T0 + 5 * S, T0 + 6 * S, 0.99))
    body = env.client.get(f"/v1/alerts/{gap.id}", headers=env.auth("viewer")).json()
    assert body["explanation"] is None and "'seq_gap'" in body["explanation_detail"]
    body = env.client.get(f"/v1/alerts/{early.id}", headers=env.auth("viewer")).json()
    assert body["explanation"] is None
    assert "complete reading times before the alert" in body["explanation_detail"]
    problem(env.client.get("/v1/alerts/nope", headers=env.auth("viewer")), 404)


def test_an_explanation_never_reads_the_whole_history(env, monkeypatch) -> None:
    """Check explaining an alert reads at most a week before it, and a one-metric device
    only the first hour (it read every reading of the device: 1.9 s and 1 GB per alert
    with 3 M readings, and a list of 200 alerts with explain=true never ended)."""
    import time

    from edgewise.server.routes import alerts as routes
    from edgewise.store.base import Alert

    routes._explained.clear()
    asked: list[int | None] = []
    real = env.store.query

    def spy(device_id, metric=None, start_ns=None, end_ns=None, step_ns=None, limit=None):
        if step_ns is None:  # readings read out (the cache's fingerprints are aggregates)
            asked.append(start_ns)
        return real(device_id, metric, start_ns, end_ns, step_ns, limit)

    monkeypatch.setattr(env.store, "query", spy)
    t0 = time.time_ns() - 3600 * 10**9
    env.send({"ts": t0 / 1e9, "metrics": {"a": 1.0}, "seq": 1})
    one = env.store.add_alert(Alert(env.device, t0, t0 + 10**9, 0.99))
    env.client.get(f"/v1/alerts/{one.id}", headers=env.auth("viewer"))
    assert asked == [t0 - routes.REFERENCE_NS]
    asked.clear()
    env.send({"ts": t0 / 1e9 + 1, "metrics": {"a": 1.0, "b": 2.0}, "seq": 2})
    two = env.store.add_alert(Alert(env.device, t0 + 2 * 10**9, t0 + 3 * 10**9, 0.99))
    env.client.get(f"/v1/alerts/{two.id}", headers=env.auth("viewer"))
    assert None not in asked and min(asked) == t0 + 2 * 10**9 - routes.MAX_REFERENCE_NS


def test_deleting_a_device_drops_its_cached_explanations(env: Env) -> None:
    """Check DELETE /v1/devices/{id} leaves no explanation of its alerts in the cache (what
    they were made of is gone from the store; they stayed in memory for the process's
    life), and another device's cached explanation stays."""
    from edgewise.server.routes import alerts as routes

    routes._explained.clear()
    _pump(env)
    alert = env.store.add_alert(Alert(env.device, T0 + 295 * S, T0 + 299 * S, 0.99))
    assert env.client.get(f"/v1/alerts/{alert.id}",
                          headers=env.auth("viewer")).json()["explanation"] is not None
    routes._explained[("other-device", "x", 0, 1)] = (0, (), {})
    assert {k[0] for k in routes._explained} == {env.device, "other-device"}
    r = env.client.delete(f"/v1/devices/{env.device}", headers=env.auth("admin"))
    assert r.status_code in (200, 204), r.text
    assert {k[0] for k in routes._explained} == {"other-device"}
    routes._explained.clear()
