"""The registry signs and serves only what devices can use: a stored model that is missing or
damaged on disk is neither signed nor served (and publishing the same bytes again repairs
it), and a rollout to a target or with an expiry no device can use is refused without
spending a release counter."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from starlette.exceptions import StarletteDeprecationWarning
from typer.testing import CliRunner

from edgewise.cli import app as cli_app
from edgewise.cli import load_commands
from edgewise.errors import InvalidParameterError, SignatureError
from edgewise.registry import MIN_EXPIRY_DAYS, Registry, check_expires_days, verify
from edgewise.security.credentials import Security
from edgewise.server.problems import install_problem_handlers
from edgewise.server.routes.models import make_router

with warnings.catch_warnings():  # Starlette 1.x prefers httpx2 and warns, once, at import
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from fastapi.testclient import TestClient

MODEL = b"0123456789abcdef"  # 16 bytes


def _blob(reg: Registry, sha256: str) -> Path:
    return reg.root / "blobs" / sha256


def _truncate(reg: Registry, sha256: str, size: int = 13) -> None:
    path = _blob(reg, sha256)
    path.write_bytes(path.read_bytes()[:size])


def _flip(reg: Registry, sha256: str) -> None:
    path = _blob(reg, sha256)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 1
    path.write_bytes(bytes(data))


# -- 1. a damaged blob is neither signed nor served -------------------------------------------


@pytest.mark.parametrize("damage", ["truncated", "flipped", "missing"])
def test_a_damaged_blob_is_refused_at_rollout_and_spends_no_counter(tmp_path, damage):
    """Check a stored model truncated to 13 of its 16 bytes (a bit flipped, the file gone) is
    refused at rollout, naming the version and the repair; it signed a manifest of the 13
    bytes (whose sha256 no device could ever fetch), or answered a missing blob as unknown."""
    reg = Registry(tmp_path)
    mv = reg.publish("m", "1.0.0", MODEL, format="bin")
    if damage == "truncated":
        _truncate(reg, mv.sha256)
    elif damage == "flipped":
        _flip(reg, mv.sha256)
    else:
        _blob(reg, mv.sha256).unlink()
    with pytest.raises(SignatureError, match=r"'m' version '1\.0\.0'.*Publish the same") as e:
        reg.rollout("m", "1.0.0", "device:p1")
    assert e.value.reason == "blob_damaged"
    assert ("is missing" if damage == "missing" else "is damaged") in str(e.value)
    assert reg.releases() == []
    # the same version published again with the same bytes repairs it, and changes nothing else
    again = reg.publish("m", "1.0.0", MODEL, format="bin")
    assert again == mv and _blob(reg, mv.sha256).read_bytes() == MODEL
    s = reg.rollout("m", "1.0.0", "device:p1")
    assert (s.manifest.release, s.manifest.sha256, s.manifest.size) == (1, mv.sha256, 16)
    assert verify(s.manifest_bytes, s.signature, reg.blob(mv.sha256), device_id="p1",
                  trusted_keys={reg.key_id: reg.public_key_bytes}).size == 16
    reg.close()


def test_publishing_the_same_bytes_again_rewrites_a_damaged_blob(tmp_path):
    """Check any publish of the same bytes rewrites their damaged blob (it was kept because
    the file existed): as a new version, and as the same version with other metadata (still
    refused as immutable, but repaired)."""
    reg = Registry(tmp_path)
    mv = reg.publish("m", "1.0.0", MODEL, format="bin")
    _truncate(reg, mv.sha256)
    reg.publish("m", "1.0.1", MODEL, format="bin")
    assert _blob(reg, mv.sha256).read_bytes() == MODEL
    _flip(reg, mv.sha256)
    with pytest.raises(InvalidParameterError, match=r"already published \(the same bytes"):
        reg.publish("m", "1.0.0", MODEL, format="bin", trained_on="other data")
    assert _blob(reg, mv.sha256).read_bytes() == MODEL
    with pytest.raises(InvalidParameterError, match="already published; versions are immutable"):
        reg.publish("m", "1.0.0", b"other bytes", format="bin")
    assert [v.version for v in reg.versions("m")] == ["1.0.0", "1.0.1"]
    reg.close()


@dataclass
class Api:
    client: TestClient
    reg: Registry
    sec: Security
    operator: dict[str, str]
    device: dict[str, str]

    def rollout(self, **body: Any) -> Any:
        full = {"name": "m", "version": "1.0.0", "target": "device:pump-1", **body}
        return self.client.post("/v1/registry/rollouts", json=full, headers=self.operator)


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    reg, sec = Registry(tmp_path), Security(tmp_path)
    _, secret = sec.add_device("pump-1", groups=["line-a"])
    fastapi_app = FastAPI()
    install_problem_handlers(fastapi_app)
    fastapi_app.include_router(make_router(reg, sec))
    operator = {"Authorization": f"Bearer {sec.create_token('operator', 'ops')}"}
    device = {"Authorization": f"Bearer {secret}", "X-Device-Id": "pump-1"}
    with TestClient(fastapi_app) as client:
        yield Api(client, reg, sec, operator, device)
    reg.close()
    sec.close()


def _problem(resp: Any, status: int) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/problem+json")
    return resp.json()


def test_rest_refuses_to_roll_out_a_damaged_blob(api: Api):
    """Check POST /v1/registry/rollouts of a version whose blob is truncated is a 409 naming
    the version (it signed the 13 bytes, and the device got 404 for it forever)."""
    mv = api.reg.publish("m", "1.0.0", MODEL, format="bin")
    _truncate(api.reg, mv.sha256)
    p = _problem(api.rollout(), 409)
    assert (p["reason"], p["field"], p["value"]) == ("blob_damaged", "version", "1.0.0")
    assert "'m' version '1.0.0'" in p["detail"] and "publish" in p["allowed"]
    assert api.reg.releases() == []


def test_a_blob_damaged_after_rollout_is_not_served_until_published_again(api: Api):
    """Check GET /v1/models/{sha256} of a released model whose blob was corrupted afterwards
    answers 503 (reason blob_damaged) instead of bytes no manifest describes, and serves the
    published bytes once the same model is published again."""
    mv = api.reg.publish("m", "1.0.0", MODEL, format="bin")
    assert api.rollout().status_code == 200
    assert api.client.get(f"/v1/models/{mv.sha256}", headers=api.device).content == MODEL
    _flip(api.reg, mv.sha256)
    p = _problem(api.client.get(f"/v1/models/{mv.sha256}", headers=api.device), 503)
    assert (p["reason"], p["field"], p["value"]) == ("blob_damaged", "sha256", mv.sha256)
    assert "'m' version '1.0.0'" in p["detail"]
    api.reg.publish("m", "1.0.0", MODEL, format="bin")
    r = api.client.get(f"/v1/models/{mv.sha256}", headers=api.device)
    assert r.status_code == 200 and r.content == MODEL


# -- 2. targets and expiries no device can use ------------------------------------------------


def test_rest_refuses_unusable_targets_and_expiries_without_spending_a_counter(api: Api):
    """Check a blank group name, a device id with ':', an unregistered device and a lifetime
    of 1e-9 days are each a 422 naming field, value and what is allowed, and sign nothing:
    the next good rollout is release 1."""
    api.reg.publish("m", "1.0.0", MODEL, format="bin")
    for target in ("group: ", "group:line a", "device:pump-1:x", "device:-x"):
        p = _problem(api.rollout(target=target), 422)
        assert (p["field"], p["value"], p["reason"]) == ("target", target, "invalid"), p
        assert "1-64 characters" in p["allowed"] and repr(target) in p["detail"]
    p = _problem(api.rollout(target="device:ghost"), 422)
    assert (p["field"], p["value"], p["reason"]) == ("target", "device:ghost", "unknown_device")
    assert "registered device" in p["allowed"] and "not registered" in p["detail"]
    for days in (1e-9, 0.04):
        p = _problem(api.rollout(expires_days=days), 422)
        assert (p["field"], p["value"]) == ("expires_days", days), p
        assert "at least one hour" in p["detail"] and "one hour" in p["allowed"]
    assert api.reg.releases() == []
    r = api.rollout(expires_days=MIN_EXPIRY_DAYS)
    assert r.status_code == 200 and r.json()["release"] == 1, r.text
    r = api.rollout(target="group:line-a")
    assert r.status_code == 200 and r.json()["release"] == 2, r.text
    api.sec.add_device("ghost")  # registered now: it may be given a release
    r = api.rollout(target="device:ghost")
    assert r.status_code == 200 and r.json()["release"] == 3, r.text


def test_registry_refuses_invalid_target_names_and_asks_about_devices(tmp_path):
    """Check Registry.rollout refuses a target whose id or name no device can be registered
    with, and an unregistered device when told how to ask; neither spends a counter."""
    reg = Registry(tmp_path)
    reg.publish("m", "1.0.0", MODEL, format="bin")
    for target in ("group: ", "group:\t", "device:pump-7:x", "device:a/b", "group:" + "g" * 65):
        with pytest.raises(InvalidParameterError, match="1-64 characters") as e:
            reg.rollout("m", "1.0.0", target)
        assert (e.value.field, e.value.value) == ("target", target)
    with pytest.raises(InvalidParameterError, match="'ghost', which is not registered") as e:
        reg.rollout("m", "1.0.0", "device:ghost", has_device=lambda d: d == "pump-7")
    assert e.value.field == "target"
    assert reg.releases() == []
    s = reg.rollout("m", "1.0.0", "device:pump-7", has_device=lambda d: d == "pump-7")
    assert s.manifest.release == 1
    reg.close()


def test_check_expires_days_needs_at_least_an_hour():
    """Check the operator's lifetime must leave a device time to fetch the release."""
    assert check_expires_days(1 / 24) == pytest.approx(MIN_EXPIRY_DAYS)
    for days in (1e-9, 0.04, MIN_EXPIRY_DAYS * 0.999):
        with pytest.raises(InvalidParameterError, match="at least one hour"):
            check_expires_days(days, "--expires-days")


def _cli(data_dir: Path, *args: str) -> Any:
    load_commands()
    return CliRunner(mix_stderr=False).invoke(
        cli_app, ["registry", *args, "--data-dir", str(data_dir)])


def test_cli_refuses_unusable_rollouts_and_repairs_a_blob_by_publishing_again(data_dir, tmp_path):
    """Check ``edgewise registry rollout`` refuses, in one line and signing nothing, a blank
    group, a device id with ':', an unregistered device, a lifetime of 1e-9 days and a
    truncated blob; ``publish`` of the same file again repairs the blob."""
    model = tmp_path / "m.bin"
    model.write_bytes(MODEL)
    assert _cli(data_dir, "publish", "m", "1.0.0", str(model)).exit_code == 0
    sec = Security(data_dir)
    sec.add_device("pump-7")
    sec.close()
    cases = {("group: ",): "not a valid group name",
             ("device:pump-7:x",): "not a valid device id",
             ("device:ghost",): "'ghost', which is not registered",
             ("device:pump-7", "--expires-days", "1e-9"): "at least one hour"}
    for args, message in cases.items():
        r = _cli(data_dir, "rollout", "m", "1.0.0", *args)
        assert r.exit_code == 2 and r.stderr.count("\n") == 1, (args, r.stderr, r.exception)
        assert message in r.stderr, r.stderr
    reg = Registry(data_dir)
    mv = reg.version("m", "1.0.0")
    _truncate(reg, mv.sha256)
    r = _cli(data_dir, "rollout", "m", "1.0.0", "device:pump-7")
    assert r.exit_code == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "'m' version '1.0.0'" in r.stderr and "Publish the same model file" in r.stderr
    assert reg.releases() == []
    r = _cli(data_dir, "publish", "m", "1.0.0", str(model))
    assert r.exit_code == 0 and "already published with these bytes" in r.stdout, r.stderr
    assert _blob(reg, mv.sha256).read_bytes() == MODEL
    r = _cli(data_dir, "rollout", "m", "1.0.0", "device:pump-7")
    assert r.exit_code == 0 and r.stdout.startswith("release 1:"), r.stderr
    reg.close()
