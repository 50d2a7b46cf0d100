"""Security hunt M1, M2, L1: no lockout by wrong secrets, no device-id oracle, the MQTT
password never shown, audit entries that name the token unambiguously."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgewise.cli import app
from edgewise.errors import ConfigError
from edgewise.transport.client import parse_mqtt_url
from tests.server.conftest import build_env


def _body(seq: int) -> dict[str, object]:
    return {"ts": 1_700_000_000 + seq, "metrics": {"t": 1.0}, "seq": seq}


def test_a_wrong_secret_flood_does_not_lock_out_the_right_secret(data_dir: Path) -> None:
    """Check many wrong secrets (telemetry, and junk tokens on a read route) sent in a
    device's name leave its right secret working, on telemetry and the model route."""
    gen = build_env(data_dir, throttle_after_failures=3)
    env = next(gen)
    try:
        for _ in range(10):
            env.send(_body(0), secret="wrong")
            env.client.get("/v1/devices", headers=env.device_headers(secret="junk"))
        assert env.send(_body(1)).status_code == 200
        r = env.client.get(f"/v1/devices/{env.device}/model", headers=env.device_headers())
        assert r.status_code in (200, 204)
    finally:
        gen.close()


def test_registered_and_unknown_ids_get_the_same_answers(data_dir: Path) -> None:
    """Check a registered id and an unknown one get the same status sequence to the same
    flood of junk secrets, on telemetry, the model route and a read route."""
    gen = build_env(data_dir, throttle_after_failures=3)
    env = next(gen)
    try:
        def answers(device: str) -> list[int]:
            out = []
            for _ in range(5):
                out.append(env.send(_body(0), device=device, secret="junk").status_code)
                out.append(env.client.get(f"/v1/devices/{device}/model",
                                          headers=env.device_headers(device, "junk")).status_code)
                out.append(env.client.get("/v1/devices", headers=env.device_headers(
                    device, "junk")).status_code)
            return out

        known = answers(env.device)
        getattr(env.security, "_sources", {}).clear()  # the same start for the second id
        assert known == answers("no-such-device")
        assert 401 in known
    finally:
        gen.close()


def test_the_mqtt_password_is_masked_in_errors() -> None:
    """Check a malformed MQTT URL's error (parser and CLI) does not echo the password."""
    with pytest.raises(ConfigError) as info:
        parse_mqtt_url("mqtt://gateway:S3cretPw@")
    assert "S3cretPw" not in str(info.value) and "gateway:***@" in str(info.value)
    res = CliRunner().invoke(app, ["serve", "--data-dir", "/nonexistent-ew",
                                   "--mqtt", "mqtt://gateway:S3cretPw@"])
    assert res.exit_code != 0 and "S3cretPw" not in res.output


def test_http_audit_entries_name_the_token_id(data_dir: Path) -> None:
    """Check two admin tokens with the same name leave audit entries that tell them apart."""
    gen = build_env(data_dir)
    env = next(gen)
    try:
        tokens = [env.security.create_token("admin", "ops") for _ in range(2)]
        for i, tok in enumerate(tokens):
            r = env.client.post("/v1/devices", json={"name": f"pump-{i + 10}"},
                                headers={"Authorization": f"Bearer {tok}"})
            assert r.status_code == 201, r.text
        actors = {e.target: e.actor for e in env.security.audit_log()
                  if e.action == "device.add"}
        ids = [env.security.authenticate_token(t).token_id for t in tokens]
        assert actors["pump-10"] == f"token:{ids[0]}:ops"
        assert actors["pump-11"] == f"token:{ids[1]}:ops"
    finally:
        gen.close()
