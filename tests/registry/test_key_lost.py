"""A registry whose signing key is gone: reading it makes no key, signing is refused rather
than done with a new key that no agent trusts, and a new key is made only on purpose."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgewise.cli import app, load_commands
from edgewise.errors import SignatureError
from edgewise.registry import Registry, verify

MODEL = b"model bytes " * 20


def _cli(data_dir: Path, *args: str):
    load_commands()
    return CliRunner(mix_stderr=False).invoke(
        app, ["registry", *args, "--data-dir", str(data_dir)])


def _released_then_key_deleted(data_dir: Path) -> tuple[str, bytes, bytes]:
    """Publish and roll out one release, then delete signing_key.pem; return the key id, the
    public key the agents were given, and the deleted PEM."""
    reg = Registry(data_dir)
    reg.publish("ewz", "1.0.0", MODEL, format="pickle")
    reg.rollout("ewz", "1.0.0", "device:pump-1")
    kid, pub = reg.key_id, reg.public_key_bytes
    reg.close()
    pem = data_dir / "registry" / "signing_key.pem"
    saved = pem.read_bytes()
    pem.unlink()
    return kid, pub, saved


def test_reading_a_registry_whose_key_is_gone_makes_no_key(data_dir):
    """Check opening, listing and what agents fetch leave a deleted key deleted (Registry()
    made a new key on open, so agents trusting the old one refused every later update)."""
    kid, pub, _ = _released_then_key_deleted(data_dir)
    pem = data_dir / "registry" / "signing_key.pem"
    reg = Registry(data_dir)
    assert not pem.exists(), "opening the registry made a new signing key"
    assert [v.version for v in reg.versions()] == ["1.0.0"]
    rel = reg.current("pump-1")
    assert rel is not None and reg.blob(rel.manifest.sha256) == MODEL
    assert reg.key_state == "lost" and reg.key_id == kid and reg.public_key_bytes == pub
    reg.close()
    listed = _cli(data_dir, "list", "--json")
    assert listed.exit_code == 0, listed.stderr
    assert json.loads(listed.stdout)["key_id"] == kid
    assert json.loads(listed.stdout)["key_state"] == "lost"
    text = _cli(data_dir, "list")
    assert f"signing key {kid}: LOST" in text.stdout
    shown = _cli(data_dir, "pubkey")
    assert shown.exit_code == 0 and shown.stdout.split()[0] == kid, shown.stderr
    assert "signing_key.pem) is gone" in shown.stderr
    assert not pem.exists()


def test_signing_with_a_lost_key_is_refused_and_the_old_key_still_works(data_dir):
    """Check rollout and publish refuse with one line naming the key, the file and the way out
    (a new key was made silently), sign nothing, and restoring the file is all it takes."""
    kid, pub, saved = _released_then_key_deleted(data_dir)
    pem = data_dir / "registry" / "signing_key.pem"
    reg = Registry(data_dir)
    with pytest.raises(SignatureError) as e:
        reg.rollout("ewz", "1.0.0", "device:pump-2")
    assert e.value.reason == "key_lost"
    for part in (kid, str(pem), "Restore signing_key.pem", "edgewise registry new-key"):
        assert part in str(e.value)
    with pytest.raises(SignatureError, match="is gone"):
        reg.publish("ewz", "1.1.0", b"other", format="pickle")
    model = data_dir / "m.pkl"
    model.write_bytes(b"third")
    for args in (("rollout", "ewz", "1.0.0", "device:pump-3"),
                 ("publish", "ewz", "1.2.0", str(model))):
        r = _cli(data_dir, *args)
        assert r.exit_code == 2 and r.stderr.count("\n") == 1, (args, r.stderr)
        assert r.stderr.startswith("error: The registry's signing key") and kid in r.stderr
    assert [x.release for x in reg.releases()] == [1]
    assert [v.version for v in reg.versions()] == ["1.0.0"]
    assert not pem.exists()
    # agents trust the key they were given at enrolment: once the file is back, they accept
    pem.write_bytes(saved)
    s = reg.rollout("ewz", "1.0.0", "device:pump-2")
    m = verify(s.manifest_bytes, s.signature, MODEL, trusted_keys={kid: pub}, device_id="pump-2")
    assert (m.release, m.key_id) == (2, kid)
    reg.close()


def test_new_key_replaces_a_lost_key_only_on_purpose(data_dir):
    """Check 'registry new-key' is refused while the key exists, and after a loss makes a new
    key, keeps the old public half, and agents with only the old key refuse its releases."""
    reg = Registry(data_dir)
    reg.publish("ewz", "1.0.0", MODEL, format="pickle")
    reg.rollout("ewz", "1.0.0", "device:pump-1")
    kid, old_pub = reg.key_id, reg.public_key_bytes
    with pytest.raises(SignatureError, match="already has signing key") as e:
        reg.new_key()
    assert e.value.reason == "key_exists"
    reg.close()
    r = _cli(data_dir, "new-key")
    assert r.exit_code == 2 and "already has signing key" in r.stderr
    (data_dir / "registry" / "signing_key.pem").unlink()
    r = _cli(data_dir, "new-key")
    assert r.exit_code == 0, r.stderr
    new_id = r.stdout.split()[0]
    assert new_id != kid
    assert (data_dir / "registry" / f"signing_key.{kid}.pub").exists()
    reg = Registry(data_dir)
    assert reg.key_state == "ok" and reg.key_id == new_id
    s = reg.rollout("ewz", "1.0.0", "device:pump-1")
    with pytest.raises(SignatureError) as e:
        verify(s.manifest_bytes, s.signature, MODEL, trusted_keys={kid: old_pub},
               device_id="pump-1", installed_release=1)
    assert e.value.reason == "unknown_key"
    assert verify(s.manifest_bytes, s.signature, MODEL, installed_release=1, device_id="pump-1",
                  trusted_keys={new_id: reg.public_key_bytes}).release == 2
    reg.close()


def test_a_fresh_registry_makes_its_key_only_when_asked(data_dir):
    """Check listing a registry that never had a key makes none (it did), and asking for the
    public key to enrol agents, or rolling out, makes it once."""
    pem = data_dir / "registry" / "signing_key.pem"
    reg = Registry(data_dir)
    assert not pem.exists() and reg.key_state == "none"
    listed = _cli(data_dir, "list", "--json")
    assert json.loads(listed.stdout)["key_state"] == "none"
    assert json.loads(listed.stdout)["key_id"] is None and not pem.exists()
    shown = _cli(data_dir, "pubkey")
    assert shown.exit_code == 0 and pem.exists(), shown.stderr
    assert reg.key_state == "ok" and shown.stdout.split()[0] == reg.key_id
    reg.close()


def test_gateway_start_with_a_lost_key_warns_and_makes_none(data_dir, caplog):
    """Check the gateway, which makes the key at its first start, does not remake a lost one:
    it starts, logs why rollouts are refused, and still serves the existing release."""
    from edgewise.config import Settings
    from edgewise.gateway.runtime import Gateway

    kid, _, _ = _released_then_key_deleted(data_dir)
    caplog.set_level(logging.WARNING)
    gw = Gateway(Settings.load(env={}, data_dir=data_dir))
    try:
        assert not (data_dir / "registry" / "signing_key.pem").exists()
        assert gw.registry.current("pump-1") is not None
        assert any(kid in r.getMessage() and "is gone" in r.getMessage() for r in caplog.records)
    finally:
        gw.pipeline.close()
        gw.store.close()
        gw.security.close()
        gw.registry.close()
