"""Registry fixes from hunt s35: a group's re-signed release silently undid a device's own
rollback order; the "expired, still offered" list named releases nobody is offered; a damaged
signing_key.pem stopped the whole gateway (and `registry list`)."""

from __future__ import annotations

import itertools
import logging
import re
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgewise.cli import app, load_commands
from edgewise.errors import InvalidParameterError, SignatureError
from edgewise.registry import Registry, verify
from edgewise.security import Security
from tests.server.conftest import build_env

load_commands()
HOUR_NS = 3600 * 10**9


def _cli(*args: object):
    return CliRunner(mix_stderr=False).invoke(app, [str(a) for a in args])


def _rolled_back(data_dir: Path, groups: dict[str, list[str]] | None = None) -> Registry:
    """ewz 2.0.0 to group:line-a (pump-8, pump-9), then ewz 1.0.0 to device:pump-8 as a
    rollback order (2.0.0 misbehaves on pump-8): releases 1 and 2."""
    groups = groups or {"pump-8": ["line-a"], "pump-9": ["line-a"]}
    reg = Registry(data_dir, device_groups=lambda: groups)
    for v in ("1.0.0", "2.0.0"):
        reg.publish("ewz", v, v.encode(), format="pickle")
    reg.rollout("ewz", "2.0.0", "group:line-a")
    reg.rollout("ewz", "1.0.0", "device:pump-8", kind="rollback")
    return reg


def _offered(reg: Registry, device: str, groups: tuple[str, ...] = ("line-a",)) -> tuple:
    rel = reg.current(device, groups, formats=["pickle"])
    return (rel.release, rel.version, rel.target, rel.kind)


# -- 1. a group's release does not silently undo a device's rollback order ---------------------

def test_group_resign_that_would_undo_a_device_rollback_is_refused(data_dir: Path) -> None:
    """Check re-signing the group's release (as the README says to before it expires) is
    refused, naming the device, its rollback order and both ways on; pump-8 stays on 1.0.0
    and no release counter is spent (it was accepted and pump-8 was offered 2.0.0 again)."""
    reg = _rolled_back(data_dir)
    with pytest.raises(InvalidParameterError) as exc:
        reg.rollout("ewz", "2.0.0", "group:line-a")
    msg = str(exc.value)
    for part in ("'group:line-a'", "device 'pump-8'", "rollback order to '1.0.0'",
                 "(release 2, to 'device:pump-8')", "--keep-rollbacks",
                 "(edgewise registry rollout ewz 2.0.0 device:pump-8)"):
        assert part in msg, (part, msg)
    assert exc.value.field == "keep_rollbacks"
    assert _offered(reg, "pump-8") == (2, "1.0.0", "device:pump-8", "rollback")
    assert [r.release for r in reg.releases()] == [1, 2]


def test_a_group_rollback_to_a_newer_version_is_refused_too(data_dir: Path) -> None:
    """Check a group rollback order that is still newer than the device's own rollback (3.0.0
    -> 2.0.0 for the group, pump-8 held at 1.0.0) is refused the same way."""
    reg = _rolled_back(data_dir)
    reg.publish("ewz", "3.0.0", b"3", format="pickle")
    reg.rollout("ewz", "3.0.0", "group:line-a", keep_rollbacks=True)
    assert _offered(reg, "pump-8")[1] == "1.0.0"
    with pytest.raises(InvalidParameterError, match=re.escape(
            "Rollback order of 'ewz' '2.0.0' to 'group:line-a' would move device 'pump-8' "
            "off its rollback order")):
        reg.rollout("ewz", "2.0.0", "group:line-a", kind="rollback")


def test_keep_rollbacks_signs_the_device_rollback_again_in_the_same_step(
        data_dir: Path) -> None:
    """Check --keep-rollbacks: the group is re-signed (pump-9 offered it), and pump-8's
    rollback order signed again just after it, so pump-8 is never offered 2.0.0 and its
    agent accepts the new order."""
    reg = _rolled_back(data_dir)
    s = reg.rollout("ewz", "2.0.0", "group:line-a", keep_rollbacks=True,
                    expires_in_s=7 * 86400)
    assert s.manifest.release == 3 and len(s.kept) == 1
    kept = s.kept[0].manifest
    assert (kept.release, kept.version, kept.target, kept.kind) == (
        4, "1.0.0", "device:pump-8", "rollback")
    assert kept.expires_ns == s.manifest.expires_ns
    assert _offered(reg, "pump-8") == (4, "1.0.0", "device:pump-8", "rollback")
    assert _offered(reg, "pump-9") == (3, "2.0.0", "group:line-a", "release")
    m = verify(s.kept[0].manifest_bytes, s.kept[0].signature, b"1.0.0",
               trusted_keys={reg.key_id: reg.public_key_bytes}, device_id="pump-8",
               groups=["line-a"], installed_release=2)
    assert m.release == 4
    # nothing to keep: the flag is a no-op
    assert reg.rollout("ewz", "2.0.0", "device:pump-9", keep_rollbacks=True).kept == ()


def test_moving_the_device_forward_first_lets_the_group_be_signed_again(
        data_dir: Path) -> None:
    """Check the other way on: a release of 2.0.0 to the device itself (on purpose), after
    which the group's re-sign is accepted and reaches pump-8."""
    reg = _rolled_back(data_dir)
    reg.rollout("ewz", "2.0.0", "device:pump-8")
    assert reg.rollout("ewz", "2.0.0", "group:line-a").kept == ()
    assert _offered(reg, "pump-8") == (4, "2.0.0", "group:line-a", "release")


def test_a_release_in_another_format_or_to_a_group_without_the_device_is_not_refused(
        data_dir: Path) -> None:
    """Check only what would reach the rolled-back device in that format counts: a C build
    of 2.0.0 to the group (pump-8's agent runs pickle) and a release to another group."""
    reg = _rolled_back(data_dir, {"pump-8": ["line-a"], "pump-9": ["line-a", "line-b"]})
    reg.rollout("ewz", "2.0.0", "group:line-b")
    reg.publish("ewz", "2.0.0-c", b"/* C */", format="c")
    reg.rollout("ewz", "2.0.0-c", "group:line-a")
    assert _offered(reg, "pump-8")[:2] == (2, "1.0.0")


def test_cli_rollout_refuses_in_one_line_and_keep_rollbacks_audits_both(
        data_dir: Path) -> None:
    """Check `registry rollout` refuses the group re-sign in one line (exit 2) and, with
    --keep-rollbacks, prints and audits the rollback order it signed again."""
    sec = Security(data_dir)
    sec.add_device("pump-8", groups=["line-a"])
    sec.add_device("pump-9", groups=["line-a"])
    sec.close()
    model = data_dir / "m.pkl"
    for v in ("1.0.0", "2.0.0"):
        model.write_bytes(v.encode())
        assert _cli("registry", "publish", "ewz", v, model, "--data-dir", data_dir).exit_code == 0
    assert _cli("registry", "rollout", "ewz", "2.0.0", "group:line-a", "--data-dir",
                data_dir).exit_code == 0
    assert _cli("registry", "rollout", "ewz", "1.0.0", "device:pump-8", "--rollback",
                "--data-dir", data_dir).exit_code == 0
    res = _cli("registry", "rollout", "ewz", "2.0.0", "group:line-a", "--data-dir", data_dir)
    assert res.exit_code == 2 and res.stdout == ""
    assert len(res.stderr.strip().splitlines()) == 1 and "device 'pump-8'" in res.stderr
    res = _cli("registry", "rollout", "ewz", "2.0.0", "group:line-a", "--keep-rollbacks",
               "--data-dir", data_dir)
    assert res.exit_code == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0].startswith("release 3: ewz 2.0.0 -> group:line-a (release)")
    assert lines[1].startswith("release 4: ewz 1.0.0 -> device:pump-8 (rollback)")
    sec = Security(data_dir)
    try:
        rollouts = [(e.target, e.detail["release"]) for e in sec.audit_log()
                    if e.action == "model.rollout"]
    finally:
        sec.close()
    assert ("device:pump-8", 4) in rollouts and ("group:line-a", 3) in rollouts


# -- 2. "expired, still offered" is what current() offers --------------------------------------

def test_expired_list_leaves_out_a_release_its_device_moved_on_from(data_dir: Path) -> None:
    """Check an expired device:pump-8 release that pump-8 no longer is offered (a newer group
    release is) is not listed, nor warned about at the gateway's start (it was, with a
    re-run command that would itself be refused)."""
    reg = Registry(data_dir, device_groups=lambda: {"pump-8": ["line-a"]})
    for v in ("1.0.0", "2.0.0"):
        reg.publish("ewz", v, v.encode(), format="pickle")
    reg.rollout("ewz", "1.0.0", "device:pump-8", expires_in_s=3600)
    reg.rollout("ewz", "2.0.0", "group:line-a")
    later = time.time_ns() + 2 * HOUR_NS
    assert reg.current("pump-8", ["line-a"]).release == 2
    assert reg.expired_current(later) == []
    # the device's own release, when it is what the device is offered, is still listed
    reg2 = Registry(data_dir / "two", device_groups=lambda: {"pump-8": []})
    reg2.publish("ewz", "1.0.0", b"1", format="pickle")
    reg2.rollout("ewz", "1.0.0", "device:pump-8", expires_in_s=3600)
    reg2.rollout("ewz", "1.0.0", "group:line-a")  # pump-8 is not in line-a
    assert [r.release for r in reg2.expired_current(later)] == [1]


def test_registry_list_marks_expired_only_what_a_registered_device_is_offered(
        data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Check `registry list` (the registry reading the device credentials) marks no EXPIRED
    release that its device moved on from."""
    sec = Security(data_dir)
    sec.add_device("pump-8", groups=["line-a"])
    sec.close()
    reg = Registry(data_dir)
    for v in ("1.0.0", "2.0.0"):
        reg.publish("ewz", v, v.encode(), format="pickle")
    real = time.time_ns
    import edgewise.registry as registry_module

    monkeypatch.setattr(registry_module.time, "time_ns", lambda: real() - 2 * HOUR_NS)
    reg.rollout("ewz", "1.0.0", "device:pump-8", expires_in_s=3600)
    monkeypatch.setattr(registry_module.time, "time_ns", real)
    reg.rollout("ewz", "2.0.0", "group:line-a")
    reg.close()
    res = _cli("registry", "list", "--data-dir", data_dir)
    assert res.exit_code == 0, res.stderr
    assert "EXPIRED" not in res.stdout
    assert "release 1: ewz 1.0.0 -> device:pump-8 (release)  expired " in res.stdout


def test_expired_list_matches_current_for_every_device_and_format(tmp_path: Path) -> None:
    """Check the one-pass computation agrees with current() asked by each registered device
    (its groups) for each format and for none, and by a device put in a group nobody is in
    yet, over releases of two models in two formats to devices and overlapping groups."""
    groups = {"p1": ["a"], "p2": ["a", "b"], "p3": ["b"], "p4": []}
    reg = Registry(tmp_path, device_groups=lambda: groups)
    reg.publish("m", "1", b"1", format="pickle")
    reg.publish("m", "2", b"2", format="c")
    reg.publish("n", "1", b"n1", format="pickle")
    targets = ["device:p1", "device:p2", "device:p4", "group:a", "group:b", "group:nobody"]
    for i, (mv, t) in enumerate(itertools.product(["m/1", "m/2", "n/1", "m/1"], targets)):
        if i % 4 == 1:
            continue
        name, version = mv.split("/")
        for kind in ("release", "rollback"):
            try:
                reg.rollout(name, version, t, expires_in_s=3600, kind=kind)
                break
            except InvalidParameterError:
                continue
    assert len(reg.releases()) > 10
    askers = [(d, gs) for d, gs in groups.items()] + [("next-one", ["nobody"])]
    want = {rel.release for d, gs in askers for fmts in (None, ["pickle"], ["c"])
            if (rel := reg.current(d, gs, formats=fmts)) is not None}
    later = time.time_ns() + 2 * HOUR_NS
    assert {r.release for r in reg.expired_current(later)} == want
    assert reg.expired_current() == []


# -- 3. a damaged signing key ------------------------------------------------------------------

def _damage(data_dir: Path, how: str) -> Path:
    pem = data_dir / "registry" / "signing_key.pem"
    pem.unlink()
    if how == "garbage":
        pem.write_bytes(b"-----BEGIN PRIVATE KEY-----\ntruncated\n")
    else:  # unreadable: read_bytes raises (as root too)
        pem.mkdir()
    return pem


@pytest.mark.parametrize("how", ["garbage", "unreadable"])
def test_a_damaged_key_opens_serves_and_refuses_signing_in_one_line(
        data_dir: Path, how: str, caplog: pytest.LogCaptureFixture) -> None:
    """Check a registry whose signing_key.pem is damaged opens (it raised), lists, serves
    its releases, warns at the gateway's start (ensure_key) and refuses publish, rollout
    and new-key with a SignatureError naming the file and what to do."""
    reg = Registry(data_dir)
    reg.publish("ewz", "1.0.0", b"model", format="pickle")
    kid = reg.rollout("ewz", "1.0.0", "group:line-a").manifest.key_id
    reg.close()
    pem = _damage(data_dir, how)
    reg = Registry(data_dir)
    with caplog.at_level(logging.WARNING, logger="edgewise.registry"):
        assert reg.ensure_key() == "damaged"
    assert any(str(pem) in r.getMessage() for r in caplog.records)
    assert reg.key_state == "damaged" and reg.listed_key_id == kid
    assert reg.current("pump-1", ["line-a"]).release == 1
    assert reg.blob(reg.version("ewz", "1.0.0").sha256) == b"model"
    assert reg.key_id == kid  # the public half agents trust, from signing_key.pub
    for act in (lambda: reg.rollout("ewz", "1.0.0", "group:line-b"),
                lambda: reg.publish("ewz", "2.0.0", b"m2", format="pickle"),
                reg.signing_key):
        with pytest.raises(SignatureError) as exc:
            act()
        assert exc.value.reason == "bad_key"
        assert str(pem) in str(exc.value) and "restore" in str(exc.value)
        assert "\n" not in str(exc.value)
    with pytest.raises(SignatureError, match="move it away"):
        reg.new_key()
    assert [r.release for r in reg.releases()] == [1]
    res = _cli("registry", "list", "--data-dir", data_dir)
    assert res.exit_code == 0, res.stderr
    assert res.stdout.startswith(f"signing key {kid}: DAMAGED")
    res = _cli("registry", "rollout", "ewz", "1.0.0", "group:line-b", "--data-dir", data_dir)
    assert res.exit_code == 2 and len(res.stderr.strip().splitlines()) == 1
    assert str(pem) in res.stderr


def test_the_gateway_starts_with_a_damaged_key_and_serves_telemetry_and_models(
        data_dir: Path) -> None:
    """Check the gateway app (create_app, as `edgewise serve` builds it) starts with a
    damaged signing_key.pem: telemetry is taken, the device is offered its release, the
    listing says 'damaged' and a rollout is 409 (reason bad_key)."""
    reg = Registry(data_dir)
    reg.publish("ewz", "1.0.0", b"model", format="pickle")
    reg.rollout("ewz", "1.0.0", "group:line-a")
    reg.close()
    _damage(data_dir, "garbage")
    gen = build_env(data_dir)
    env = next(gen)
    try:
        env.security.set_device_groups(env.device, ["line-a"])
        resp = env.send({"ts": int(time.time()) - 5, "metrics": {"t": 1.0}, "seq": 1})
        assert resp.status_code < 300, resp.text
        resp = env.client.get(f"/v1/devices/{env.device}/model",
                              params={"formats": "pickle", "groups": "line-a"},
                              headers=env.device_headers())
        assert resp.status_code == 200 and "manifest" in resp.json()
        listing = env.client.get("/v1/registry", headers=env.auth("viewer")).json()
        assert listing["key_state"] == "damaged"
        resp = env.client.post("/v1/registry/rollouts", headers=env.auth("operator"),
                               json={"name": "ewz", "version": "1.0.0",
                                     "target": "group:line-b"})
        assert resp.status_code == 409 and resp.json()["reason"] == "bad_key"
    finally:
        gen.close()
