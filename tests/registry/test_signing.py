"""Signed manifests: one test per update attack, as python-tuf does."""

from __future__ import annotations

import os
import stat
import time

import pytest

from edgewise.errors import SignatureError
from edgewise.registry import (
    Artifact,
    Registry,
    load_or_create_key,
    sign,
    verify,
)

MODEL_V1 = b"model one " * 100
MODEL_V2 = b"model two! " * 100


@pytest.fixture
def reg(data_dir):
    r = Registry(data_dir)
    r.publish("ewz", "1.0.0", MODEL_V1, format="pickle", trained_on="NAB", metrics={"auc": 0.7})
    r.publish("ewz", "1.1.0", MODEL_V2, format="pickle", trained_on="NAB", metrics={"auc": 0.8})
    yield r
    r.close()


def _verify(reg, s, payload=None, **kw):
    kw.setdefault("device_id", "pump-1")
    return verify(s.manifest_bytes, s.signature, s.payload if payload is None else payload,
                  trusted_keys={reg.key_id: reg.public_key_bytes}, **kw)


def test_key_is_private_and_public_key_exported(data_dir):
    """Check that the key file is mode 0600, stable across restarts, public key exported."""
    r = Registry(data_dir)
    r.signing_key()  # opening a registry makes no key; the first signing does
    pem = data_dir / "registry" / "signing_key.pem"
    assert stat.S_IMODE(os.stat(pem).st_mode) == 0o600
    assert (data_dir / "registry" / "signing_key.pub").read_text().strip()
    assert Registry(data_dir).key_id == r.key_id


def test_good_release_verifies(reg):
    """Check that an untouched release for this device verifies and carries its metadata."""
    s = reg.rollout("ewz", "1.0.0", "device:pump-1")
    m = _verify(reg, s)
    assert (m.release, m.size, m.format, m.kind) == (1, len(MODEL_V1), "pickle", "release")
    assert m.metadata["trained_on"] == "NAB" and m.key_id == reg.key_id


def test_group_release_verifies_for_members_only(reg):
    """Check that a group target reaches members of that group and nobody else."""
    s = reg.rollout("ewz", "1.0.0", "group:line-a")
    assert _verify(reg, s, groups=["line-a"]).release == 1
    with pytest.raises(SignatureError, match="targets 'group:line-a'") as e:
        _verify(reg, s, groups=["line-b"])
    assert e.value.reason == "wrong_device"


def test_attack_bit_flip(reg):
    """Check that a payload with one bit flipped is refused as tampered."""
    s = reg.rollout("ewz", "1.0.0", "device:pump-1")
    bad = bytearray(s.payload)
    bad[len(bad) // 2] ^= 0x01
    with pytest.raises(SignatureError, match="differs from the manifest") as e:
        _verify(reg, s, bytes(bad))
    assert e.value.reason == "tampered"


def test_attack_manifest_edited(reg):
    """Check that an edited manifest (size bumped) no longer verifies."""
    s = reg.rollout("ewz", "1.0.0", "device:pump-1")
    edited = s.manifest_bytes.replace(b'"size":1000', b'"size":1001')
    assert edited != s.manifest_bytes
    with pytest.raises(SignatureError, match="signature does not verify") as e:
        verify(edited, s.signature, s.payload, trusted_keys={reg.key_id: reg.public_key_bytes},
               device_id="pump-1")
    assert e.value.reason == "tampered"


def test_attack_rollback(reg):
    """Check that an older release counter is refused once a newer one is installed."""
    old = reg.rollout("ewz", "1.0.0", "device:pump-1")
    new = reg.rollout("ewz", "1.1.0", "device:pump-1")
    installed = _verify(reg, new).release
    with pytest.raises(SignatureError, match="older than the installed release 2") as e:
        _verify(reg, old, installed_release=installed)
    assert e.value.reason == "rollback"


def test_signed_rollback_order_is_accepted(reg):
    """Check that an explicit signed rollback order installs the old model."""
    reg.rollout("ewz", "1.0.0", "device:pump-1")
    reg.rollout("ewz", "1.1.0", "device:pump-1")
    order = reg.rollback("ewz", "1.0.0", "device:pump-1")
    m = _verify(reg, order, installed_release=2)
    assert (m.release, m.kind, m.version, order.payload) == (3, "rollback", "1.0.0", MODEL_V1)


def test_attack_replay(reg):
    """Check that the installed release offered again is a 'replay' (a no-op for callers)."""
    s = reg.rollout("ewz", "1.0.0", "device:pump-1")
    with pytest.raises(SignatureError, match="already installed") as e:
        _verify(reg, s, installed_release=1)
    assert e.value.reason == "replay"


def test_attack_wrong_device(reg):
    """Check that a manifest for another device is refused."""
    s = reg.rollout("ewz", "1.0.0", "device:pump-2")
    with pytest.raises(SignatureError, match="targets 'device:pump-2'") as e:
        _verify(reg, s)
    assert e.value.reason == "wrong_device"


def test_attack_freeze_expired(reg):
    """Check that an expired manifest is refused (freeze attack)."""
    s = reg.rollout("ewz", "1.0.0", "device:pump-1", expires_in_s=60)
    with pytest.raises(SignatureError, match="expired") as e:
        _verify(reg, s, now_ns=time.time_ns() + 61 * 10**9)
    assert e.value.reason == "expired"


def test_attack_endless_data(reg):
    """Check that a payload longer than the manifest says is refused without reading it all."""

    class Endless:
        read_bytes = 0

        def read(self, n):
            self.read_bytes += n
            return b"\0" * n

    s = reg.rollout("ewz", "1.0.0", "device:pump-1")
    stream = Endless()
    with pytest.raises(SignatureError, match="longer than the 1000 bytes") as e:
        _verify(reg, s, stream)
    assert e.value.reason == "endless_data"
    assert stream.read_bytes == len(MODEL_V1) + 1


def test_attack_unknown_key(reg, tmp_path):
    """Check that a release signed by a key the device does not trust is refused."""
    rogue = load_or_create_key(tmp_path / "rogue")
    s = sign(Artifact(MODEL_V2, "ewz", "9.9.9", 99, "device:pump-1"), rogue)
    with pytest.raises(SignatureError, match="does not trust") as e:
        _verify(reg, s)
    assert e.value.reason == "unknown_key"


def test_attack_key_id_spoofed(reg, tmp_path):
    """Check that a rogue signature claiming the trusted key id fails as tampered."""
    rogue = load_or_create_key(tmp_path / "rogue")
    s = sign(Artifact(MODEL_V2, "ewz", "9.9.9", 99, "device:pump-1"), rogue)
    forged = s.manifest_bytes.replace(rogue.key_id.encode(), reg.key_id.encode())
    with pytest.raises(SignatureError) as e:
        verify(forged, s.signature, s.payload, trusted_keys={reg.key_id: reg.public_key_bytes},
               device_id="pump-1")
    assert e.value.reason == "tampered"


def test_attack_mix_and_match(reg):
    """Check that release 2's manifest with release 1's model is refused as mix-and-match."""
    r1 = reg.rollout("ewz", "1.0.0", "device:pump-1")
    r2 = reg.rollout("ewz", "1.1.0", "device:pump-1")
    m1 = _verify(reg, r1)
    with pytest.raises(SignatureError, match="is the model of release 1") as e:
        _verify(reg, r2, r1.payload, installed_release=1, known=[m1])
    assert e.value.reason == "mix_and_match"


def test_release_counter_is_monotonic_and_listed(reg):
    """Check that counters increase across targets and releases are listed per target."""
    a = reg.rollout("ewz", "1.0.0", "device:pump-1").manifest.release
    b = reg.rollout("ewz", "1.0.0", "group:all").manifest.release
    c = reg.rollout("ewz", "1.1.0", "device:pump-1").manifest.release
    assert (a, b, c) == (1, 2, 3)
    assert [r.release for r in reg.releases("device:pump-1")] == [1, 3]
    assert reg.current("pump-1", ["all"]).release == 3
    assert reg.current("pump-9", ["all"]).release == 2
    assert reg.current("pump-9") is None


def test_published_version_is_immutable(reg):
    """Check that republishing an existing version is refused with the fix in the message."""
    with pytest.raises(ValueError, match="already published; versions are immutable"):
        reg.publish("ewz", "1.0.0", b"other", format="pickle")


def test_bad_target_is_refused(reg):
    """Check that a target that is neither device: nor group: is refused."""
    with pytest.raises(ValueError, match="'device:<id>' or 'group:<name>'"):
        reg.rollout("ewz", "1.0.0", "pump-1")
