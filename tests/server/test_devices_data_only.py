"""Devices listed by what the store holds, fleet's empty ``stale_after``, and JSON bodies
the app cannot read (not UTF-8, gzipped) answered as problems the spec documents."""

from __future__ import annotations

import gzip
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgewise.store.base import Alert
from tests.server.conftest import Env, build_postgres_env, problem


def _revoke_keeping_data_then_expire(env: Env) -> str:
    """A second device sends, gets an alert, is revoked with its data kept (``edgewise
    device delete`` beside a running gateway), then retention takes its readings: only its
    seqs and its alert are left. Returns its id."""
    now = int(time.time())
    device, secret = env.security.add_device("pump-2")
    sent = env.send([{"ts": now - 100, "seq": 1, "metrics": {"a": 1.0}}], device=device,
                    secret=secret)
    assert sent.status_code == 200, sent.text
    env.store.add_alert(Alert(device, (now - 100) * 10**9, (now - 99) * 10**9, 0.9))
    env.security.keep_data(device)
    env.security.delete_device(device, actor="cli")
    assert env.store.delete_before(time.time_ns()) == 1  # the retention pass
    assert env.store.has_device_data(device) and not env.store.devices()
    return device


def _check_still_listed(env: Env, device: str) -> None:
    viewer = env.auth("viewer")
    rows = {d["id"]: d for d in env.client.get("/v1/devices", headers=viewer).json()}
    assert sorted(rows) == ["pump-1", device]
    row = rows[device]
    assert (row["registered"], row["readings"], row["metrics"], row["last_reading"],
            row["auth_failures"]) == (False, 0, [], None, None), row
    assert row["last_seen_from"] == "arrival"  # the gateway heard it before the revoke
    fleet = env.client.get("/v1/fleet", headers=viewer).json()
    health = {d["id"]: (d["health"], d["open_alerts"]) for d in fleet["devices"]}
    assert health[device] == ("alerting", 1), health
    assert fleet["counts"] == {"silent": 1, "alerting": 1}
    assert fleet["open_alerts"] == 1
    # what the list offers can be deleted, after which the id is free again
    gone = env.client.delete(f"/v1/devices/{device}", headers=env.auth("admin"))
    assert gone.status_code == 200 and gone.json()["rows_deleted"] >= 2, gone.text
    ids = [d["id"] for d in env.client.get("/v1/devices", headers=viewer).json()]
    assert ids == ["pump-1"]


def test_a_revoked_device_with_only_seqs_and_alerts_stays_listed(env: Env) -> None:
    """Check a device with no credentials and no readings left, but seqs and an open alert,
    is in GET /v1/devices (registered false) and in /v1/fleet (alerting), as the 409 of
    POST /v1/devices says it is there; it was left out of both."""
    device = _revoke_keeping_data_then_expire(env)
    taken = problem(env.client.post("/v1/devices", json={"name": device},
                                    headers=env.auth("admin")), 409)
    assert taken["reason"] == "has_data"
    _check_still_listed(env, device)


@pytest.mark.postgres
def test_a_device_with_only_seqs_and_alerts_stays_listed_on_postgres(
        data_dir: Path, postgres_url: str) -> None:
    """Check the same on the PostgreSQL store."""
    envs: Iterator[Env] = build_postgres_env(data_dir, postgres_url, "ew_dlist_")
    env = next(envs)
    try:
        _check_still_listed(env, _revoke_keeping_data_then_expire(env))
    finally:
        envs.close()


def test_an_empty_stale_after_is_the_default(env: Env) -> None:
    """Check ``stale_after=`` is the 5-minute default, like an empty filter elsewhere; it
    made every device that had sent stale (a duration of 0)."""
    now = int(time.time())
    assert env.send([{"ts": now - 1, "seq": 1, "metrics": {"a": 1.0}}]).status_code == 200
    viewer = env.auth("viewer")
    for params in ({}, {"stale_after": ""}):
        fleet = env.client.get("/v1/fleet", params=params, headers=viewer).json()
        assert [(d["id"], d["health"]) for d in fleet["devices"]] == [("pump-1", "ok")], params
    body = problem(env.client.get("/v1/fleet", params={"stale_after": " "}, headers=viewer),
                   422)
    assert body["field"] == "stale_after"


def _post_device(env: Env, body: bytes, **headers: str) -> object:
    return env.client.post("/v1/devices", content=body, headers={
        **env.auth("admin"), "Content-Type": "application/json", **headers})


def test_a_json_body_that_is_not_utf8_is_422_bad_json(env: Env) -> None:
    """Check a body FastAPI cannot decode (not UTF-8) is the 422 ``bad_json`` on ``body``
    that any other unreadable JSON body gets, not an undocumented 400."""
    for route in ("/v1/devices", "/v1/tokens"):
        resp = env.client.post(route, content=b'{"name": "p\xff"}', headers={
            **env.auth("admin"), "Content-Type": "application/json"})
        body = problem(resp, 422)
        assert (body["field"], body["reason"]) == ("body", "bad_json"), body
        assert "JSON object" in body["allowed"]
    assert [d.id for d in env.security.list_devices()] == ["pump-1"]


def test_a_compressed_json_body_is_415_naming_content_encoding(env: Env) -> None:
    """Check a gzipped body on a route that takes no encoding is 415 naming
    Content-Encoding and its value; telemetry still takes gzip."""
    packed = gzip.compress(json.dumps({"name": "pump-2"}).encode())
    for coding in ("gzip", "br"):
        body = problem(_post_device(env, packed, **{"Content-Encoding": coding}), 415)
        assert (body["field"], body["value"], body["allowed"], body["reason"]) == (
            "Content-Encoding", coding, "identity", "bad_encoding"), body
    # the same body uncompressed, with Content-Encoding identity, is a device
    plain = _post_device(env, json.dumps({"name": "pump-2"}).encode(),
                         **{"Content-Encoding": "identity"})
    assert plain.status_code == 201, plain.text
    reading = [{"ts": int(time.time()) - 1, "seq": 1, "metrics": {"a": 1.0}}]
    sent = env.client.post("/v1/telemetry", content=gzip.compress(json.dumps(reading).encode()),
                           headers={**env.device_headers(), "Content-Encoding": "gzip",
                                    "Content-Type": "application/json"})
    assert sent.status_code == 200 and sent.json()["accepted"] == 1, sent.text


def test_device_answers_are_described_by_their_openapi_schemas(env: Env) -> None:
    """Check the 200 answers of GET /v1/devices, GET /v1/fleet and DELETE /v1/devices/{id}
    are schemas in /openapi.json (they were free-form objects), and each answer has exactly
    the fields its schema names, with the types it says."""
    from edgewise.server.routes.devices import DeviceDeleted, DeviceRow, Fleet, FleetDevice

    spec = env.client.get("/openapi.json").json()

    def ok_schema(path: str, method: str) -> dict:
        return spec["paths"][path][method]["responses"]["200"]["content"][
            "application/json"]["schema"]

    assert ok_schema("/v1/devices", "get")["items"] == {"$ref": "#/components/schemas/DeviceRow"}
    assert ok_schema("/v1/fleet", "get") == {"$ref": "#/components/schemas/Fleet"}
    assert ok_schema("/v1/devices/{device_id}", "delete") == {
        "$ref": "#/components/schemas/DeviceDeleted"}
    schemas = spec["components"]["schemas"]
    assert "last_seen_from" in schemas["DeviceRow"]["required"]

    device = _revoke_keeping_data_then_expire(env)  # rows of both kinds
    assert env.send([{"ts": int(time.time()) - 1, "seq": 1, "metrics": {"a": 1.0}}]
                    ).status_code == 200
    viewer = env.auth("viewer")
    rows = env.client.get("/v1/devices", headers=viewer).json()
    assert len(rows) == 2
    for row in rows:
        assert set(row) == set(DeviceRow.model_fields), row
        assert DeviceRow.model_validate(row, strict=True).model_dump() == row
    fleet = env.client.get("/v1/fleet", headers=viewer).json()
    assert set(fleet) == set(Fleet.model_fields)
    for row in fleet["devices"]:
        assert set(row) == set(FleetDevice.model_fields), row
    assert Fleet.model_validate(fleet).model_dump() == fleet
    gone = env.client.delete(f"/v1/devices/{device}", headers=env.auth("admin")).json()
    assert set(gone) == set(DeviceDeleted.model_fields)
    assert DeviceDeleted.model_validate(gone, strict=True).model_dump() == gone
