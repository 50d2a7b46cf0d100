"""Tests for device credentials, tokens, throttling, rate limits and the audit log."""

from __future__ import annotations

import math
import multiprocessing
import os
import stat
from pathlib import Path

import pytest

from edgewise.errors import AuthError, InvalidParameterError, RateLimitError, ThrottledError
from edgewise.security import RateLimiter, Security


def test_secret_is_random_256_bits_and_only_a_hash_is_stored(data_dir: Path) -> None:
    """Check that secrets have >= 128 bits, differ per device, and never reach the file."""
    sec = Security(data_dir)
    _, s1 = sec.add_device("a")
    _, s2 = sec.add_device("b")
    assert s1 != s2
    assert len(s1) * 6 >= 256 - 6  # urlsafe base64: 6 bits per character
    raw = (data_dir / "security.sqlite").read_bytes()
    wal = data_dir / "security.sqlite-wal"
    if wal.exists():
        raw += wal.read_bytes()
    assert s1.encode() not in raw and s2.encode() not in raw


def test_file_modes_are_private(data_dir: Path) -> None:
    """Check that the credentials file is readable by its owner only."""
    Security(data_dir)
    mode = stat.S_IMODE(os.stat(data_dir / "security.sqlite").st_mode)
    assert mode == 0o600


@pytest.mark.parametrize(("device", "secret", "match"), [
    ("pump", "", "credentials missing"),
    ("", "x", "credentials missing"),
    ("ghost", "x", "unknown or the secret is wrong"),
    ("pump", "nope", "unknown or the secret is wrong"),
])
def test_bad_credentials_are_refused(data_dir: Path, device: str, secret: str,
                                     match: str) -> None:
    """Check that empty, unknown and wrong credentials are refused with a clear reason."""
    sec = Security(data_dir)
    _, good = sec.add_device("pump")
    with pytest.raises(AuthError, match=match) as info:
        sec.authenticate_device(device, secret)
    assert good not in str(info.value) and (not secret or secret not in str(info.value)
                                            or secret == "x")


def test_throttled_after_consecutive_failures(data_dir: Path) -> None:
    """Check that after N wrong secrets from one source its wrong secrets are throttled and
    counted, while the right secret still passes (from there or anywhere)."""
    sec = Security(data_dir, throttle_after=100)
    _, secret = sec.add_device("pump")
    for _ in range(99):
        with pytest.raises(AuthError):
            sec.authenticate_device("pump", "wrong", source="10.0.0.9")
    sec.authenticate_device("pump", secret, source="10.0.0.9")  # a success resets the run
    for _ in range(100):
        with pytest.raises(AuthError) as info:
            sec.authenticate_device("pump", "wrong", source="10.0.0.9")
        assert not isinstance(info.value, ThrottledError)
    with pytest.raises(ThrottledError, match="100 wrong device secrets in a row") as info:
        sec.authenticate_device("ghost", "wrong", source="10.0.0.9")
    assert info.value.retry_after_s > 0
    assert sec.throttled_attempts("10.0.0.9") == 1
    with pytest.raises(AuthError) as info:  # another source is not paused
        sec.authenticate_device("pump", "wrong", source="10.0.0.7")
    assert not isinstance(info.value, ThrottledError)
    sec.authenticate_device("pump", secret, source="10.0.0.9")  # the right one passes


def test_duplicate_and_invalid_device_names(data_dir: Path) -> None:
    """Check that a second device with the same id and a bad id are refused by name."""
    sec = Security(data_dir)
    sec.add_device("pump-1")
    with pytest.raises(InvalidParameterError, match="'pump-1' already exists"):
        sec.add_device("pump-1")
    with pytest.raises(InvalidParameterError, match="'a/b' is not a valid device id"):
        sec.add_device("a/b")
    assert [d.id for d in sec.list_devices()] == ["pump-1"]


def test_tokens_roles_and_first_admin(data_dir: Path) -> None:
    """Check that the first admin token is made once and tokens carry their role."""
    sec = Security(data_dir)
    admin = sec.ensure_admin_token()
    assert admin and sec.ensure_admin_token() is None
    p = sec.authenticate_token(admin)
    assert p.role == "admin" and p.can("operator")
    viewer = sec.authenticate_token(sec.create_token("viewer"))
    assert viewer.can("viewer") and not viewer.can("operator")
    with pytest.raises(AuthError, match="not recognised"):
        sec.authenticate_token("ew_forged")
    with pytest.raises(InvalidParameterError, match="'root'"):
        sec.create_token("root")


def test_device_secret_is_not_a_token(data_dir: Path) -> None:
    """Check that a device secret cannot be used as an API token."""
    sec = Security(data_dir)
    _, secret = sec.add_device("pump")
    with pytest.raises(AuthError):
        sec.authenticate_token(secret)


def test_admin_actions_are_audited(data_dir: Path) -> None:
    """Check that device add/delete and token create appear in the audit log."""
    sec = Security(data_dir)
    sec.add_device("pump", actor="alice")
    sec.create_token("operator", "ops", actor="alice")
    sec.delete_device("pump", actor="bob")
    actions = [(e.actor, e.action) for e in reversed(sec.audit_log())]
    assert actions == [("alice", "device.add"), ("alice", "token.create"),
                       ("bob", "device.delete")]
    with pytest.raises(KeyError, match="'pump' is not registered"):
        sec.delete_device("pump")


def _add_in_child(path: str) -> None:
    Security(Path(path)).add_device("from-child")


def test_another_process_can_add_devices(data_dir: Path) -> None:
    """Check that a second process (the CLI while serve runs) sees and writes the same file."""
    sec = Security(data_dir)
    sec.add_device("from-parent")
    ctx = multiprocessing.get_context("spawn")
    p = ctx.Process(target=_add_in_child, args=(str(data_dir),))
    p.start()
    p.join(30)
    assert p.exitcode == 0
    assert sec.has_device("from-child")


def test_rate_limiter_refills() -> None:
    """Check that the bucket refuses over the burst and names the limit."""
    rl = RateLimiter(rate_per_s=1000, burst=100)
    rl.take("d", 100)
    with pytest.raises(RateLimitError, match="limit of 1000/s") as info:
        rl.take("d", 50)
    assert math.isclose(info.value.retry_after_s, 0.05, abs_tol=0.01)
    rl.take("other", 100)  # buckets are per device


def test_device_groups_are_stored_replaced_and_deleted_with_the_device(data_dir: Path) -> None:
    """Check groups given at registration are kept, replaced, listed, and go with the device."""
    sec = Security(data_dir)
    sec.add_device("pump-1", groups=["line-b", "line-a", "line-a"])
    assert sec.device_groups("pump-1") == ["line-a", "line-b"]
    assert sec.set_device_groups("pump-1", ["line-c"]) == ["line-c"]
    assert [r.groups for r in sec.list_devices()] == [("line-c",)]
    with pytest.raises(KeyError, match="'nosuch' is not registered"):
        sec.set_device_groups("nosuch", ["line-a"])
    with pytest.raises(ValueError, match="Group name ':x' is not valid"):
        sec.add_device("pump-2", groups=[":x"])
    assert not sec.has_device("pump-2")
    sec.delete_device("pump-1")
    sec.add_device("pump-1")
    assert sec.device_groups("pump-1") == []
    sec.close()
