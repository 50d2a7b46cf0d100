"""Labels hunt of session 36: a label posted while its device is deleted does not outlive
the deletion (``POST /v1/labels`` checked the device, then wrote with nothing held between:
a ``DELETE /v1/devices/{id}`` landing in the gap deleted the device and its labels, the
label was written after, 201, and inherited by a device registered again under the id)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

import edgewise.label.workflow as workflow
import edgewise.server.routes.devices as devices
import edgewise.server.routes.labels as labels_route
from tests.server.conftest import Env, problem


def _send(env: Env) -> int:
    """50 readings of pump-1 from ten minutes ago; their first second."""
    t0 = int(time.time()) - 600
    env.send([{"ts": t0 + i, "seq": i + 1, "metrics": {"t": 1.0}} for i in range(50)])
    return t0


def _in_thread(fn: Callable[[], Any]) -> tuple[threading.Thread, list[Any]]:
    out: list[Any] = []
    th = threading.Thread(target=lambda: out.append(fn()), daemon=True)
    th.start()
    return th, out


def _delete(env: Env) -> Callable[[], Any]:
    return lambda: env.client.delete("/v1/devices/pump-1", headers=env.auth("admin"))


def _post_label(env: Env, t0: int) -> Any:
    return env.client.post("/v1/labels", headers=env.auth("operator"), json={
        "device_id": "pump-1", "start": t0 + 5, "end": t0 + 10, "label": "anomaly",
        "note": "n"})


def _labels(env: Env) -> list[Any]:
    r = env.client.get("/v1/labels?device=pump-1", headers=env.auth("viewer"))
    assert r.status_code == 200, r.text
    return r.json()


def _inherits_nothing(env: Env) -> None:
    """The deleted device has no label, nor has one registered again under its id."""
    assert _labels(env) == []
    r = env.client.post("/v1/devices", headers=env.auth("admin"), json={"name": "pump-1"})
    assert r.status_code == 201, r.text
    assert _labels(env) == []


def test_a_label_posted_while_its_device_is_deleted_is_a_404_and_not_kept(
        env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    """Check a DELETE landing between the route's check of the device and its write makes
    the label a 404 ``deleted_device`` (the same problem as after the deletion), and no
    label is left for the id: it was 201, and the label listed for the deleted id."""
    t0 = _send(env)
    real = devices.known_device
    armed = [True]

    def known_device(security: Any, store: Any, device_id: str) -> bool:
        ok = real(security, store, device_id)
        if armed and ok:  # the deletion lands in the gap, and finishes
            armed.clear()
            th, out = _in_thread(_delete(env))
            th.join(20)
            assert out and out[0].status_code == 200, out
        return ok

    monkeypatch.setattr(devices, "known_device", known_device)
    r = _post_label(env, t0)
    monkeypatch.setattr(devices, "known_device", real)
    body = problem(r, 404)
    assert (body["reason"], body["field"], body["value"]) == (
        "deleted_device", "device_id", "pump-1"), body
    _inherits_nothing(env)


def test_a_label_posted_after_the_labels_went_but_before_the_deletion_ends_is_a_404(
        env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    """Check a label posted once a deletion deleted the device's labels, while it still
    runs (its data is noted as kept until it ends, so the device still looked known), is
    a 404 ``unknown_device``: it was 201 and the label outlived the deletion."""
    t0 = _send(env)
    real = workflow.delete_models
    during: list[Any] = []

    def delete_models(data_dir: Any, device_id: str) -> Any:
        th, out = _in_thread(lambda: _post_label(env, t0))
        th.join(20)
        during.extend(out)
        return real(data_dir, device_id)

    monkeypatch.setattr(workflow, "delete_models", delete_models)
    r = _delete(env)()
    monkeypatch.setattr(workflow, "delete_models", real)
    assert r.status_code == 200, r.text
    assert during, "the label request did not finish"
    body = problem(during[0], 404)
    assert (body["reason"], body["field"]) == ("unknown_device", "device_id"), body
    _inherits_nothing(env)


def test_a_deletion_waits_for_a_label_being_written_then_deletes_it(
        env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    """Check a deletion reaching the labels while a label is written under the label
    file's lock waits for it (no deadlock: the route takes no other lock the deletion
    holds) and then deletes it with the device's other labels."""
    t0 = _send(env)
    real = labels_route.live_device
    started: list[tuple[threading.Thread, list[Any]]] = []

    def live_device(security: Any, store: Any, device_id: str) -> bool:
        ok = real(security, store, device_id)
        started.append(_in_thread(_delete(env)))
        deadline = time.monotonic() + 10  # the deletion got as far as the labels
        while store.has_device_data(device_id) and time.monotonic() < deadline:
            time.sleep(0.01)
        return ok

    monkeypatch.setattr(labels_route, "live_device", live_device)
    r = _post_label(env, t0)
    monkeypatch.setattr(labels_route, "live_device", real)
    assert r.status_code == 201, r.text
    th, out = started[0]
    th.join(20)
    assert out and out[0].status_code == 200, out
    assert out[0].json()["labels_deleted"] == 1
    _inherits_nothing(env)
