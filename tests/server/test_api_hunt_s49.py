"""REST API hunt, session 49: a cut readings page said only ``truncated: true`` (the points
come metric after metric, so whole metrics were missing, unnamed, with no way to go on);
the RUL answer showed a viewer the server's own file paths."""

from __future__ import annotations

from typing import Any

from edgewise.telemetry import Reading
from tests.server.conftest import Env

T0 = 1769860800 * 10**9


def _readings(env: Env, **params: Any) -> dict[str, Any]:
    r = env.client.get(f"/v1/devices/{env.device}/readings", params=params,
                       headers=env.auth("viewer"))
    assert r.status_code == 200, r.text
    return r.json()


def test_a_cut_readings_page_names_where_it_stopped_and_the_metrics_left_out(
        env: Env) -> None:
    """Check a page cut by ``limit`` says the metric cut, the exact time of its first
    point left out (nanoseconds, readings sharing timestamps across metrics) and the
    metrics it has none of; following it gives every point once (it said only
    ``truncated: true``, and metrics 'b' and 'c' were silently absent)."""
    env.store.append([Reading(env.device, m, T0 + i * 10**9 + 7, float(i))
                      for i in range(5) for m in ("a", "b", "c")])
    whole = _readings(env)
    assert whole["truncated"] is False and whole["next"] is None
    page = _readings(env, limit=3)
    assert page["truncated"] is True and list(page["series"]) == ["a"]
    assert page["next"] == {"metric": "a", "start": "2026-01-31T12:00:03.000000007Z",
                            "metrics_not_read": ["b", "c"]}, page["next"]
    # the rest of 'a' from next.start, then each metric not read: every point exactly once
    rest = _readings(env, metric="a", start=page["next"]["start"])
    got = {"a": page["series"]["a"]["v"] + rest["series"]["a"]["v"]}
    for m in page["next"]["metrics_not_read"]:
        got[m] = _readings(env, metric=m)["series"][m]["v"]
    assert got == {m: s["v"] for m, s in whole["series"].items()}


def test_a_cut_page_of_buckets_goes_on_from_the_next_bucket(env: Env) -> None:
    env.store.append([Reading(env.device, "a", T0 + i * 10**8, 1.0) for i in range(50)])
    page = _readings(env, step="1s", limit=2)
    assert page["next"] == {"metric": "a", "start": "2026-01-31T12:00:02.000000000Z",
                            "metrics_not_read": []}
    rest = _readings(env, step="1s", start=page["next"]["start"])
    assert page["series"]["a"]["t"] + rest["series"]["a"]["t"] == [
        T0 / 1e9 + k for k in range(5)]


def test_the_readings_spec_says_what_next_is(env: Env) -> None:
    spec = env.client.get("/openapi.json").json()
    text = spec["paths"]["/v1/devices/{device_id}/readings"]["get"]["description"]
    assert "`next`" in text and "metrics_not_read" in text


def test_rul_without_a_model_names_no_server_path(env: Env) -> None:
    """Check the viewer's ``no_model`` detail says where the model goes without the
    server's absolute data directory (it named '/…/ewdata/models')."""
    r = env.client.get(f"/v1/devices/{env.device}/rul", headers=env.auth("viewer"))
    body = r.json()
    assert (r.status_code, body["reason"]) == (200, "no_model"), r.text
    assert str(env.settings.data_dir) not in r.text, body["detail"]
    assert "<data dir>/models" in body["detail"]


def test_rul_with_a_damaged_model_names_the_file_not_its_server_path(env: Env) -> None:
    models = env.settings.data_dir / "models"
    models.mkdir(exist_ok=True)
    (models / "rul-v1.ewm").write_bytes(b"not a model at all\n")
    env.store.append([Reading(env.device, "a", T0 + i * 10**9, float(i)) for i in range(30)])
    r = env.client.get(f"/v1/devices/{env.device}/rul", headers=env.auth("viewer"))
    body = r.json()
    assert (r.status_code, body["reason"], body["model"]) == (200, "bad_model", "rul-v1.ewm")
    assert str(env.settings.data_dir) not in r.text, r.text
    assert "'<data dir>/models/rul-v1.ewm'" in body["detail"], body["detail"]
    assert body["skipped"][0]["model"] == "rul-v1.ewm"
