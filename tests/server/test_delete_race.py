"""Deleting one device in several requests at once: one deletion, one audit entry.

A bug hunt found every one of several simultaneous ``DELETE /v1/devices/{id}`` of one
device answered 200 and audited ``device.delete_data``, while only the first deleted
anything (the others found nothing left: ``rows_deleted`` 0). Deletions of one id now run
one at a time, and whether the device is known is checked under that: the first is
answered 200 and audited, the others 404 (the device is gone).
"""

from __future__ import annotations

import threading
from typing import Any

import pytest

from edgewise.errors import StoreError
from edgewise.server.routes import devices as routes
from tests.server.conftest import Env, problem

REQUESTS = 4


def _send(env: Env) -> None:
    for seq in (1, 2, 3):
        r = env.send({"ts": 1_700_000_000 + seq, "metrics": {"t": 1.0}, "seq": seq})
        assert r.status_code == 200, r.text


def _hold_known_devices(monkeypatch: pytest.MonkeyPatch, requests: int) -> None:
    """Hold each request that found the device known until ``requests`` of them have (or
    3 s have passed): what simultaneous requests under load do (all check before any
    deletes). A request that finds the device unknown is not held."""
    cond, seen = threading.Condition(), [0]
    real = routes.known_device

    def known_device(security: Any, store: Any, device_id: str) -> bool:
        known = real(security, store, device_id)
        if known:
            with cond:
                seen[0] += 1
                cond.notify_all()
                cond.wait_for(lambda: seen[0] >= requests, timeout=3)
        return known

    monkeypatch.setattr(routes, "known_device", known_device)


def _delete_at_once(env: Env, requests: int) -> list[Any]:
    out: list[Any] = [None] * requests

    def one(i: int) -> None:
        out[i] = env.client.delete(f"/v1/devices/{env.device}", headers=env.auth("admin"))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(requests)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert all(r is not None for r in out), "a DELETE did not finish"
    return out


def _audited(env: Env, action: str) -> int:
    return sum(1 for e in env.security.audit_log(1000)
               if e.action == action and e.target == env.device)


def test_simultaneous_deletes_of_one_device_delete_and_audit_once(
        env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    """Check of 4 simultaneous DELETEs of one device exactly one is answered 200 (with the
    rows it deleted) and audited, and the other 3 are 404 ``unknown_device``."""
    _send(env)
    _hold_known_devices(monkeypatch, REQUESTS)
    answers = _delete_at_once(env, REQUESTS)
    codes = sorted(r.status_code for r in answers)
    assert codes == [200] + [404] * (REQUESTS - 1), [(r.status_code, r.text) for r in answers]
    ok = next(r for r in answers if r.status_code == 200).json()
    assert ok["rows_deleted"] > 0 and ok["credentials_deleted"] is True, ok
    for r in answers:
        if r.status_code == 404:
            assert problem(r, 404)["reason"] == "unknown_device"
    assert _audited(env, "device.delete_data") == 1
    assert _audited(env, "device.delete") == 1
    assert not routes._DELETIONS, routes._DELETIONS  # no lock kept for a deleted id


def test_a_failed_deletion_among_simultaneous_ones_is_finished_by_the_next(
        env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    """Check when the first of 3 simultaneous DELETEs fails in the store (503, the data kept
    and the id refused), the next one deletes (200, audited once), and the last finds the
    device gone (404)."""
    _send(env)
    real = env.store.delete_device
    calls = [0]

    def fails_once(device_id: str) -> int:
        calls[0] += 1
        if calls[0] == 1:
            raise StoreError("simulated: no space left on device")
        return real(device_id)

    monkeypatch.setattr(env.store, "delete_device", fails_once)
    answers = _delete_at_once(env, 3)
    codes = sorted(r.status_code for r in answers)
    assert codes == [200, 404, 503], [(r.status_code, r.text) for r in answers]
    failed = next(r for r in answers if r.status_code == 503)
    assert problem(failed, 503)["reason"] == "store_error"
    assert next(r for r in answers if r.status_code == 200).json()["rows_deleted"] > 0
    assert _audited(env, "device.delete_data") == 1
    assert not env.security.data_kept(env.device)  # the successful deletion freed the id
    assert env.store.query(env.device) == []
