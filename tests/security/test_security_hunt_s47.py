"""Security hunt s47: tokens and roles, the audit log, per-device deletion, on real apps.

* A CSV export (``GET /v1/devices/{id}/readings.csv``) is streamed for as long as the
  history takes; a token revoked meanwhile kept receiving the rest of it. Revocation now
  ends the stream at its next chunk (the connection is cut, not ended as a whole CSV).
* Every state-changing operation of the app's own OpenAPI is refused to a viewer token and
  to a device secret (nothing audited, nothing done), and audited when done by a token of
  the role it needs.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edgewise.store.base import Alert, Reading
from tests.server.conftest import Env, build_env

S = 10**9
T0 = 1_700_000_000 * S


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    """An app with one device 'pump-1' and a token of each role (tests/server's env)."""
    yield from build_env(tmp_path / "data")


def _audit_count(env: Env) -> int:
    return len(env.security.audit_log(100_000))


# -- a token revoked while its CSV export streams -----------------------------------------

@pytest.mark.parametrize("form", ["long", "wide"])
def test_a_token_revoked_during_a_csv_export_ends_the_stream(
        env: Env, form: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Slices of 7 rows, chunks of 5: the viewer's token is revoked as the export reads its
    third slice; the stream breaks (the test client's "response already started")
    instead of handing over the rest of the history. A token left alone exports it whole,
    and the revoked one is refused afresh."""
    from edgewise.errors import AuthError
    from edgewise.server import readings_csv

    monkeypatch.setattr(readings_csv, "SLICE_ROWS", 7)
    monkeypatch.setattr(readings_csv, "MIN_SLICE_ROWS", 7)
    monkeypatch.setattr(readings_csv, "CHUNK_ROWS", 5)
    env.store.append([Reading(env.device, "rpm", T0 + i * S, float(i)) for i in range(60)])
    url = f"/v1/devices/{env.device}/readings.csv?format={form}"
    whole = env.client.get(url, headers=env.auth("viewer"))
    assert whole.status_code == 200 and len(whole.text.splitlines()) == 61

    real, calls = env.store.query, []

    def query(*args: Any, **kw: Any) -> Any:  # the real store, the revocation timed
        calls.append(args)
        if len(calls) == 3:
            env.security.revoke_token("test-viewer")
        return real(*args, **kw)

    monkeypatch.setattr(env.store, "query", query)
    with pytest.raises(RuntimeError, match="response already started") as info:
        env.client.get(url, headers=env.auth("viewer"))
    assert isinstance(info.value.__cause__, AuthError), info.value.__cause__
    assert "revoked" in str(info.value.__cause__)
    assert len(calls) < 9  # cut at once: not every slice read (60 rows / 7 = 9)
    monkeypatch.setattr(env.store, "query", real)
    assert env.client.get(url, headers=env.auth("viewer")).status_code == 401
    whole = env.client.get(url, headers=env.auth("operator"))
    assert whole.status_code == 200 and len(whole.text.splitlines()) == 61


# -- every state-changing operation: refused below its role, audited at it -----------------

def _write_calls(env: Env) -> dict[tuple[str, str], tuple[str, dict[str, Any]]]:
    """For each non-GET operation of the spec: the concrete path, the role it needs, and a
    body that it takes (setting up what it acts on)."""
    now = time.time()
    t0 = int((now - 300) * S)
    alert = env.store.add_alert(Alert(env.device, t0, t0 + 5 * S, 0.9, drivers={"rpm": 1.0}))
    alert2 = env.store.add_alert(Alert(env.device, t0 + 60 * S, t0 + 65 * S, 0.9,
                                       drivers={"rpm": 1.0}))
    victim, _ = env.security.add_device("victim-1")
    return {
        ("POST", "/v1/devices"): ("admin", {"url": "/v1/devices", "json": {"name": "pump-9"}}),
        ("POST", "/v1/devices/{device_id}/secret"): (
            "admin", {"url": f"/v1/devices/{env.device}/secret"}),
        ("DELETE", "/v1/devices/{device_id}"): ("admin", {"url": f"/v1/devices/{victim}"}),
        ("POST", "/v1/alerts/{alert_id}/ack"): (
            "operator", {"url": f"/v1/alerts/{alert.id}/ack", "json": {}}),
        ("POST", "/v1/alerts/{alert_id}/label"): (
            "operator", {"url": f"/v1/alerts/{alert2.id}/label",
                         "json": {"label": "true_alarm"}}),
        ("POST", "/v1/labels"): ("operator", {"url": "/v1/labels", "json": {
            "device_id": env.device, "start": t0 // S, "end": t0 // S + 10,
            "label": "anomaly"}}),
        ("POST", "/v1/tokens"): ("admin", {"url": "/v1/tokens",
                                           "json": {"role": "viewer", "name": "grafana"}}),
    }


#: non-GET operations that need no API token: a device's own telemetry (not audited: data)
DEVICE_OPS = {("POST", "/v1/telemetry"), ("POST", "/v1/devices/{device_id}/telemetry")}
#: non-GET operations whose setup needs a published model: checked for refusals only
REFUSED_ONLY = {("POST", "/v1/registry/rollouts")}


def test_every_write_operation_is_refused_below_its_role_and_audited_at_it(env: Env) -> None:
    spec = env.client.get("/openapi.json").json()
    ops = {(m.upper(), p) for p, item in spec["paths"].items() for m in item
           if m.upper() != "GET"}
    calls = _write_calls(env)
    probe, probe_secret = env.security.add_device("probe-1")  # its secret is never rotated
    assert ops - DEVICE_OPS - REFUSED_ONLY == set(calls), "a write operation is untested"
    rollout = {"url": "/v1/registry/rollouts", "json": {
        "name": "m", "version": "1", "target": f"device:{env.device}"}}
    for (method, path), (need, kw) in [*calls.items(),
                                       (("POST", "/v1/registry/rollouts"),
                                        ("operator", rollout))]:
        refused = ["viewer"] + (["operator"] if need == "admin" else [])
        before = _audit_count(env)
        for role in refused:
            r = env.client.request(method, headers=env.auth(role), **kw)
            assert r.status_code == 403, (method, path, role, r.text)
        # a device secret (its own id in X-Device-Id) is never a token
        r = env.client.request(method, headers=env.device_headers(probe, probe_secret), **kw)
        assert r.status_code == 403, (method, path, "device", r.text)
        assert r.json()["reason"] == "device_credentials"
        assert _audit_count(env) == before, (method, path, "audited a refusal")
        if (method, path) in REFUSED_ONLY:
            continue
        r = env.client.request(method, headers=env.auth(need), **kw)
        assert r.status_code in (200, 201), (method, path, r.text)
        actor = env.actor(need)
        new = env.security.audit_log(_audit_count(env) - before)  # newest first
        assert new and any(e.actor == actor for e in new), (method, path, "not audited")
    assert env.security.verify_audit().ok
