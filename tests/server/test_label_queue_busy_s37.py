"""The label queue while labels.sqlite is held, a 500's headers, and ``GET /v1/labels?device=``.

* ``GET /v1/label-queue`` wrote on every request: a viewer's recorded the label set's
  snapshot row (a viewer's request is documented to change nothing), an operator's saved
  the query mix's state too; with the label file held by another writer past the busy
  timeout (an ``edgewise label import``) both answered a 500 after 10 s, where a label
  write answers 503 ``labels_busy`` with ``Retry-After``. A viewer's request now writes
  nothing (its ``snapshot_id`` is the same hash of the label set, unrecorded); an
  operator's writes through the label file's write lock and is a 503 ``labels_busy``.
* A 500 (an unexpected exception) went out from Starlette's outermost layer, without the
  security headers or ``Cache-Control: no-store``.
* ``GET /v1/labels?device=`` was a 422 ``bad_device``, where ``GET /v1/alerts?device=`` (as
  the README says of its filters) takes an empty filter as none.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pytest
from fastapi.testclient import TestClient

from edgewise.label.store import LabelStore
from tests.conftest import write_locked
from tests.server.conftest import Env, problem

N = 600


def _send_history(env: Env) -> None:
    t0 = int(time.time()) - 2 * N
    rng = np.random.default_rng(0)
    batch = [{"ts": t0 + i, "seq": i + 1,
              "metrics": {"t": float(rng.normal()), "v": float(rng.normal())}}
             for i in range(N)]
    r = env.send(batch)
    assert r.status_code == 200, r.text


def _snapshot_rows(labels: LabelStore) -> int:
    with sqlite3.connect(labels.path) as db:
        return int(db.execute("SELECT count(*) FROM snapshots").fetchone()[0])


@contextmanager
def _held(labels: LabelStore) -> Iterator[None]:
    """``labels.sqlite`` write-locked by another connection (another process's import)."""
    with write_locked(labels.path):
        yield


def _queue(env: Env, role: str) -> object:
    return env.client.get("/v1/label-queue", params={"device": "pump-1", "k": 3},
                          headers=env.auth(role))


def test_label_queue_with_the_label_file_held(env: Env) -> None:
    """Check a viewer's queue request writes nothing and is answered while another writer
    holds the label file; an operator's is a 503 labels_busy with Retry-After, having
    written nothing, and once the file is free records the snapshot the viewer was named."""
    _send_history(env)
    # the app's label store, waiting 0.3 s for another writer, not 10
    labels = LabelStore(env.settings.data_dir, security=env.security, timeout_s=0.3)
    env.client.app.state.labels = labels
    mix = env.settings.data_dir / "label-mix.json"
    with _held(labels):
        t = time.monotonic()
        r = _queue(env, "viewer")
        assert r.status_code == 200, r.text
        assert time.monotonic() - t < 5  # it did not wait for the writer
        viewed = r.json()
        assert viewed["snapshot_id"] == labels.snapshot_id("pump-1", record=False)
        busy = problem(_queue(env, "operator"), 503)
        assert busy["reason"] == "labels_busy" and str(labels.path) in busy["detail"], busy
    assert _snapshot_rows(labels) == 0  # neither request wrote a snapshot row
    assert not mix.exists()  # nor the query mix's state
    r = _queue(env, "operator")
    assert r.status_code == 200, r.text
    assert r.json()["snapshot_id"] == viewed["snapshot_id"]
    assert [it["start_ns"] for it in r.json()["items"]] == [
        it["start_ns"] for it in viewed["items"]]
    assert labels.labels_at(viewed["snapshot_id"]) == []  # recorded now (no labels yet)
    assert _snapshot_rows(labels) == 1 and "pump-1" in json.loads(mix.read_text())


def test_label_queue_busy_answer_carries_retry_after(env: Env) -> None:
    """Check the operator's 503 tells when to retry, as a label write's does."""
    _send_history(env)
    labels = LabelStore(env.settings.data_dir, security=env.security, timeout_s=0.3)
    env.client.app.state.labels = labels
    with _held(labels):
        r = _queue(env, "operator")
    assert r.status_code == 503 and r.headers["Retry-After"] == "10", r.text
    assert r.headers["Cache-Control"] == "no-store"


def test_snapshot_id_unrecorded_names_the_set_and_writes_nothing(env: Env) -> None:
    """Check ``snapshot_id(record=False)`` gives the id recording gives, writing nothing,
    and recording an id already recorded does not wait for another writer."""
    labels = LabelStore(env.settings.data_dir, timeout_s=0.3)
    labels.add("pump-1", 0, 10, "anomaly")
    with _held(labels):
        sid = labels.snapshot_id("pump-1", record=False)
        with pytest.raises(KeyError):
            labels.labels_at(sid)
    assert labels.snapshot_id("pump-1") == sid
    with _held(labels):
        assert labels.snapshot_id("pump-1") == sid  # recorded before: no write
    assert [lab.label for lab in labels.labels_at(sid)] == ["anomaly"]
    labels.close()


def test_an_internal_error_carries_the_security_headers(env: Env) -> None:
    """Check a route's unexpected exception is a problem+json 500 with the security
    headers and Cache-Control: no-store, and is still raised for the server to log."""
    app = env.client.app

    def boom() -> None:
        raise RuntimeError("secret internals")

    app.add_api_route("/v1/test-boom", boom, methods=["GET"])
    client = TestClient(app, raise_server_exceptions=False)
    r = client.get("/v1/test-boom", headers=env.auth("viewer"))
    body = problem(r, 500)
    assert body["reason"] == "internal" and "RuntimeError" in body["detail"], body
    assert "secret internals" not in r.text
    assert r.headers["Cache-Control"] == "no-store"
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    assert r.headers["X-Frame-Options"] == "DENY"
    assert "frame-ancestors 'none'" in r.headers["Content-Security-Policy"]
    with pytest.raises(RuntimeError, match="secret internals"):
        env.client.get("/v1/test-boom")


def test_an_empty_device_filter_on_labels_is_no_filter(env: Env) -> None:
    """Check ``GET /v1/labels?device=`` lists every label, as ``GET /v1/alerts?device=``
    does; a non-empty id no device can have stays a 422 bad_device."""
    op, v = env.auth("operator"), env.auth("viewer")
    r = env.client.post("/v1/labels", headers=op, json={
        "device_id": "pump-1", "start": 1_700_000_000, "end": 1_700_000_010,
        "label": "normal"})
    assert r.status_code == 201, r.text
    every = env.client.get("/v1/labels", headers=v).json()
    r = env.client.get("/v1/labels", params={"device": ""}, headers=v)
    assert r.status_code == 200, r.text
    assert r.json() == every and len(every) == 1
    r = env.client.get("/v1/labels", params={"device": "", "history": "true"}, headers=v)
    assert r.status_code == 200 and len(r.json()) == 1, r.text
    assert env.client.get("/v1/alerts", params={"device": ""}, headers=v).status_code == 200
    bad = problem(env.client.get("/v1/labels", params={"device": "bad id!"}, headers=v), 422)
    assert bad["reason"] == "bad_device" and bad["field"] == "device"


def test_openapi_says_what_the_label_routes_answer(env: Env) -> None:
    """Check the spec documents the label routes' 503 labels_busy with Retry-After, and
    that an empty ``device`` filter of ``GET /v1/labels`` is none."""
    spec = env.client.get("/openapi.json").json()
    for path, method in (("/v1/label-queue", "get"), ("/v1/labels", "post"),
                         ("/v1/alerts/{alert_id}/label", "post")):
        busy = spec["paths"][path][method]["responses"]["503"]
        assert "labels_busy" in busy["description"], (path, busy)
        assert "Retry-After" in busy["headers"], (path, busy)
    params = {p["name"]: p for p in spec["paths"]["/v1/labels"]["get"]["parameters"]}
    assert "empty: every device" in params["device"]["description"]
