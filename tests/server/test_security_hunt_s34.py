"""Security hunt, session 34 (/tmp/hunt-sec):

A. ``DELETE /v1/devices/{id}`` whose store deletion failed revoked the credentials but never
   noted the kept data (``Security.keep_data``): the id could be registered again at once
   and the new device was acked the old one's seqs; the 503 said "Nothing of this request
   was acknowledged" although the credentials were revoked.
B. Device secrets and API tokens went over plain HTTP to hosts that are not loopback with
   no warning (``edgewise agent --gateway http://…``, ``edgewise serve --host 0.0.0.0``
   without ``--tls-cert``); ``--ca-file`` with an ``http://`` gateway was taken silently.
C. The role descriptions said an operator only acknowledges and labels alerts, while it
   may roll model releases out and back (kept: it is operations work; now said).
D. A payload that is no payload at all (not JSON) skipped the per-device rate limit.
E. A device secret could not be replaced (a leaked one meant deleting the device and its
   history): ``Security.rotate_device_secret``, ``edgewise device rotate-secret`` and
   ``POST /v1/devices/{id}/secret``.
"""

from __future__ import annotations

import collections
import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgewise.cli import app, load_commands
from edgewise.errors import AuthError, InvalidParameterError, StoreError
from edgewise.security import Security
from tests.server.conftest import Env, build_env, problem

load_commands()


def _msg(seq: int, value: float = 1.0) -> dict:
    return {"ts": 1_700_000_000 + seq, "metrics": {"t": value}, "seq": seq}


# -- A ------------------------------------------------------------------------------------
def test_a_failed_store_deletion_keeps_the_id_refused_and_says_what_was_done(
        env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    """Check a DELETE whose store deletion fails notes the data as kept (every way of adding
    the id refuses it, so no new device is acked the old one's seqs) and says in its 503
    that the credentials were revoked; a later DELETE that succeeds frees the id."""
    for s in (1, 2, 3):
        assert env.send(_msg(s)).status_code == 200
    real = env.store.delete_device

    def failing(device_id: str) -> int:
        raise StoreError("simulated: no space left on device")

    monkeypatch.setattr(env.store, "delete_device", failing)
    body = problem(env.client.delete("/v1/devices/pump-1", headers=env.auth("admin")), 503)
    assert body["reason"] == "store_error"
    assert "credentials revoked" in body["detail"]
    assert "NOT deleted" in body["detail"] and "no space left on device" in body["detail"]
    assert "Nothing of this request was acknowledged" not in body["detail"]
    assert body["credentials_deleted"] is True and body["data_kept"] is True
    monkeypatch.setattr(env.store, "delete_device", real)

    assert not env.security.has_device("pump-1")
    assert env.security.data_kept("pump-1")
    with pytest.raises(InvalidParameterError, match="stored data was kept"):
        env.security.add_device("pump-1")  # what 'edgewise device add' beside a gateway does
    r = env.client.post("/v1/devices", json={"name": "pump-1"}, headers=env.auth("admin"))
    assert problem(r, 409)["reason"] == "has_data"

    r = env.client.delete("/v1/devices/pump-1", headers=env.auth("admin"))
    assert r.status_code == 200, r.text
    assert r.json()["credentials_deleted"] is False and r.json()["rows_deleted"] > 0
    assert not env.security.data_kept("pump-1")
    _, secret = env.security.add_device("pump-1")
    r = env.send(_msg(1, 99.0), secret=secret)
    assert r.status_code == 200 and r.json()["accepted"] == 1, r.text
    assert r.json()["conflicts"] == 0 and r.json()["ack_seq"] == 1


# -- B ------------------------------------------------------------------------------------
def _agent(tmp_path: Path, gateway: str, *args: str):
    secret = tmp_path / "secret"
    secret.write_text("s" * 43)
    return CliRunner(mix_stderr=False).invoke(app, [
        "agent", "--gateway", gateway, "--device", "pump-7", "--secret-file", str(secret),
        "--state-dir", str(tmp_path / "state"), "--limit", "1", "--flush-timeout", "0",
        *args])


def test_the_agent_warns_of_plain_http_to_a_host_that_is_not_loopback(tmp_path: Path) -> None:
    """Check the agent warns at start on stderr when its gateway is http:// to a host that
    is not loopback (the secret travels in clear), not for loopback; its help suggests
    https://; --ca-file with an http:// gateway is refused in one line."""
    res = _agent(tmp_path, "http://gw.invalid:8080")
    warned = [line for line in res.stderr.splitlines() if line.startswith("warning: the gateway")]
    assert len(warned) == 1, res.stderr
    assert "in clear" in warned[0] and "https://" in warned[0]
    res = _agent(tmp_path, "http://127.0.0.1:9")
    assert "in clear" not in res.stderr, res.stderr
    cert = tmp_path / "ca.pem"
    cert.write_text("not read: refused before\n")
    res = _agent(tmp_path, "http://127.0.0.1:9", "--ca-file", str(cert))
    assert res.exit_code == 2 and res.stderr.count("\n") == 1, res.stderr
    assert res.stderr.startswith("error: --ca-file") and "http://" in res.stderr
    helped = CliRunner(mix_stderr=False).invoke(app, ["agent", "--help"]).stdout
    assert "https://gw" in helped and "http://gw" not in helped


@pytest.mark.parametrize("host, warned", [("0.0.0.0", True), ("127.0.0.1", False)])
def test_serve_warns_when_it_listens_in_clear_beyond_loopback(
        tmp_path: Path, host: str, warned: bool) -> None:
    """Check 'edgewise serve' says on stderr that tokens and device secrets travel in clear
    when it listens on a host that is not loopback without --tls-cert (and not on
    loopback); it still starts."""
    from tests.gateway.conftest import GatewayProcess

    gw = GatewayProcess(tmp_path / "ew", "--host", host)
    (tmp_path / "ew").mkdir()
    try:
        gw.start()
    finally:
        gw.stop()
    lines = [line for line in gw.log.read_text().splitlines() if "in clear" in line]
    if warned:
        assert len(lines) == 1, gw.log.read_text()
        assert lines[0].startswith("warning: listening on 0.0.0.0 without --tls-cert")
        assert "device secrets" in lines[0] and "tokens" in lines[0]
    else:
        assert lines == []


# -- C ------------------------------------------------------------------------------------
def test_every_role_description_says_an_operator_rolls_out_and_a_viewer_cannot(
        env: Env) -> None:
    """Check the role descriptions (the token schema, 'token create --help') say that an
    operator rolls model releases out and back, that publishing takes no token (no HTTP
    route publishes), and that a viewer's rollout is 403 while an operator's is signed."""
    spec = env.client.get("/openapi.json").json()
    role_doc = spec["components"]["schemas"]["NewToken"]["properties"]["role"]["description"]
    assert "operator also acknowledges and labels alerts and rolls model releases" in role_doc
    assert "Publishing a model version takes no token" in role_doc
    helped = " ".join(re.sub("[│╭╮╰╯─]", " ", CliRunner(mix_stderr=False).invoke(
        app, ["token", "create", "--help"]).stdout).split())  # rich's box, unwrapped
    assert "rolls model releases out or back" in helped
    assert not [p for p in spec["paths"] if "publish" in p]
    reg = env.client.app.state.registry
    reg.publish("ewz", "1.0.0", b"old model", format="pickle")
    body = {"name": "ewz", "version": "1.0.0", "target": "group:line-a"}
    r = env.client.post("/v1/registry/rollouts", json=body, headers=env.auth("viewer"))
    assert problem(r, 403)
    r = env.client.post("/v1/registry/rollouts", json=body, headers=env.auth("operator"))
    assert r.status_code == 200, r.text


# -- D ------------------------------------------------------------------------------------
def test_a_payload_refused_whole_costs_a_rate_limit_token(data_dir: Path) -> None:
    """Check 50 payloads that are not JSON, at 1/s burst 5, are 5 x 422 then 429s: each
    costs a token as a refused record does (they were all answered 422, at length)."""
    gen = build_env(data_dir, rate_limit_per_s=1, rate_limit_burst=5)
    env = next(gen)
    try:
        codes = collections.Counter(env.send(b"not json").status_code for _ in range(50))
    finally:
        gen.close()
    assert codes[422] == 5 and codes[429] >= 44 and sum(codes.values()) == 50, codes


# -- E ------------------------------------------------------------------------------------
def test_an_admin_rotates_a_device_secret_over_http(env: Env) -> None:
    """Check POST /v1/devices/{id}/secret (admin) answers a new secret: the old one is
    refused at once, the new one taken, the device's history and groups kept, the action
    audited; a viewer or operator gets 403, an unknown or deleted device 404."""
    env.security.set_device_groups("pump-1", ["line-a"])
    assert env.send(_msg(1)).status_code == 200
    tag = env.security.credential_tags(["pump-1"])["pump-1"]
    for role in ("viewer", "operator"):
        r = env.client.post("/v1/devices/pump-1/secret", headers=env.auth(role))
        assert problem(r, 403)
    r = env.client.post("/v1/devices/pump-1/secret", headers=env.auth("admin"))
    assert r.status_code == 200, r.text
    new = r.json()["secret"]
    assert r.json()["id"] == "pump-1" and new != env.secret
    assert problem(env.send(_msg(2)), 401)  # the old secret
    r = env.send(_msg(2), secret=new)
    assert r.status_code == 200 and r.json()["ack_seq"] == 2, r.text  # history kept
    assert len(env.store.query("pump-1", "t")) == 2
    assert env.security.device_groups("pump-1") == ["line-a"]
    # a live MQTT connection made with the old secret carries the old tag: it is closed
    assert env.security.credential_tags(["pump-1"])["pump-1"] != tag
    entry = env.security.audit_log(limit=5)
    rotated = [e for e in entry if e.action == "device.rotate_secret"]
    assert rotated and rotated[0].target == "pump-1"
    assert rotated[0].actor == env.actor("admin")
    assert new not in json.dumps([e.detail for e in entry])

    body = problem(env.client.post("/v1/devices/nope/secret", headers=env.auth("admin")), 404)
    assert body["reason"] == "unknown_device" and "not registered" in body["detail"]
    env.security.keep_data("pump-1")
    env.security.delete_device("pump-1")  # as a deletion whose data was kept leaves it
    body = problem(env.client.post("/v1/devices/pump-1/secret", headers=env.auth("admin")),
                   404)
    assert "deleted" in body["detail"]


def test_rotating_a_secret_closes_a_live_mqtt_connection_made_with_the_old_one(
        data_dir: Path) -> None:
    """Check a real MQTT connection to the embedded broker, made with the secret before a
    rotation, is closed within about 2 s of it and a PUBLISH sent on it right after the
    rotation is not stored, while the new secret connects and is stored (the test above
    only checked the credential tag changed)."""
    import threading
    import time

    import paho.mqtt.client as mqtt

    from tests.conftest import wait_until
    from tests.transport.test_broker_refused_topic_seqs import _Gateway

    t0 = time.time() - 600
    g = _Gateway(data_dir)
    clients: list[mqtt.Client] = []
    try:
        secret = g.device("pump-1")
        store = g.gw.store

        def connect(password: str, client_id: str) -> tuple[mqtt.Client, threading.Event]:
            c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                            reconnect_on_failure=False)
            c.username_pw_set("pump-1", password)
            up, gone = threading.Event(), threading.Event()
            c.on_connect = lambda *a: up.set()
            c.on_disconnect = lambda *a: gone.set()
            c.connect("127.0.0.1", g.port)
            c.loop_start()
            clients.append(c)
            assert up.wait(10) and not gone.is_set()
            return c, gone

        def publish(c: mqtt.Client, seq: int) -> None:
            c.publish("edgewise/pump-1/telemetry", json.dumps(
                {"ts": t0 + seq, "seq": seq, "metrics": {"t": float(seq)}}), qos=1)

        def stored() -> list[float]:
            return sorted(v for _, _, v in store.query("pump-1", "t"))

        old, gone = connect(secret, "pump-1-old")
        publish(old, 1)
        assert wait_until(lambda: stored() == [1.0], 10), stored()
        new_secret = g.gw.security.rotate_device_secret("pump-1", actor="test")  # as HTTP
        rotated = time.monotonic()
        publish(old, 2)
        assert gone.wait(2.5), "the connection made with the old secret is still open"
        assert time.monotonic() - rotated < 2.5
        new, _ = connect(new_secret, "pump-1-new")
        publish(new, 3)
        assert wait_until(lambda: 3.0 in stored(), 10), stored()
        assert stored() == [1.0, 3.0]
    finally:
        for c in clients:
            c.disconnect()
            c.loop_stop()
        g.stop()


def test_token_create_role_help_is_the_token_schemas_roles_text() -> None:
    """Check 'token create --help' describes the roles with ROLES_DOC, the token schema's
    text: the CLI had its own copy, which already left out POST /v1/registry/rollouts."""
    import typer

    from edgewise.security.credentials import ROLES_DOC

    load_commands()
    group = typer.main.get_command(app).commands["token"]  # type: ignore[attr-defined]
    role = next(p for p in group.commands["create"].params if p.name == "role")
    assert role.help == f"admin, operator or viewer. {ROLES_DOC}"
    assert "POST /v1/registry/rollouts" in role.help


def test_device_rotate_secret_on_the_cli(data_dir: Path) -> None:
    """Check 'edgewise device rotate-secret --device ID' prints a new secret once (as
    'device add' does; --json too): the old one is refused, the new one taken, the action
    audited by cli; an unknown device, or a data dir with none, is one line, exit 2."""
    sec = Security(data_dir)
    _, old = sec.add_device("pump-1")
    sec.close()
    run = CliRunner(mix_stderr=False).invoke
    res = run(app, ["device", "rotate-secret", "--device", "pump-1", "--data-dir", str(data_dir)])
    assert res.exit_code == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0] == "device pump-1" and lines[1].startswith("secret ")
    new = lines[1].removeprefix("secret ")
    assert "shown only now" in res.stderr
    res = run(app, ["device", "rotate-secret", "--device", "pump-1", "--data-dir",
                    str(data_dir), "--json"])
    assert res.exit_code == 0, res.stderr
    newer = json.loads(res.stdout)["secret"]
    sec = Security(data_dir)
    try:
        for stale in (old, new):
            with pytest.raises(AuthError):
                sec.authenticate_device("pump-1", stale)
        sec.authenticate_device("pump-1", newer)
        actions = [(e.action, e.actor) for e in sec.audit_log(limit=3)]
        assert actions[:2] == [("device.rotate_secret", "cli")] * 2
    finally:
        sec.close()
    res = run(app, ["device", "rotate-secret", "--device", "nope", "--data-dir", str(data_dir)])
    assert res.exit_code == 2 and res.stderr.count("\n") == 1, res.stderr
    assert "'nope' is not registered" in res.stderr
    empty = data_dir.parent / "empty"
    empty.mkdir()
    res = run(app, ["device", "rotate-secret", "--device", "pump-1", "--data-dir", str(empty)])
    assert res.exit_code == 2 and res.stderr.count("\n") == 1, res.stderr
    assert not (empty / "security.sqlite").exists()
