"""Registry hunt (s45): the signing key's file mode.

README ("Storage and crash recovery"): the registry's files are mode 0600 whatever the data
directory's mode. ``registry.sqlite`` left 0644 is made 0600 when the registry opens, but a
``signing_key.pem`` restored from a backup (``cp``, ``tar`` under umask 022: mode 0644) was
used as it was, silently: any local user could read the key every agent trusts and sign
models they all accept."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from edgewise.registry import KEY_FILE, Registry
from tests.registry.conftest import file_mode as _mode


def _issued(data: Path) -> Path:
    """A registry that signed a release; its key file."""
    reg = Registry(data)
    try:
        reg.publish("ewz", "1.0.0", b"model", format="pickle")
        reg.rollout("ewz", "1.0.0", "group:line-a")
    finally:
        reg.close()
    return data / "registry" / KEY_FILE


@pytest.mark.parametrize("loose", [0o644, 0o640, 0o604])
def test_a_key_file_others_can_read_is_made_private_with_a_warning(
        tmp_path: Path, umask_022: None, caplog: pytest.LogCaptureFixture, loose: int) -> None:
    """Check a signing_key.pem restored readable by group or others is made 0600 when the
    registry opens, with a warning naming the file, its mode and what to do, and still
    signs (the same key: agents trust it)."""
    key = _issued(tmp_path)
    assert _mode(key) == 0o600
    os.chmod(key, loose)
    with caplog.at_level(logging.WARNING, logger="edgewise.registry"):
        reg = Registry(tmp_path)
    try:
        assert oct(_mode(key)) == "0o600"
        warned = [r.getMessage() for r in caplog.records if "signing key" in r.getMessage()]
        assert len(warned) == 1, warned
        assert str(key) in warned[0] and f"{loose:04o}" in warned[0]
        assert "new-key" in warned[0]
        before = reg.key_id
        reg.publish("ewz", "2.0.0", b"model 2", format="pickle")
        assert reg.rollout("ewz", "2.0.0", "group:line-a").manifest.key_id == before
    finally:
        reg.close()


def test_a_private_key_file_is_not_warned_about(tmp_path: Path, umask_022: None,
                                                caplog: pytest.LogCaptureFixture) -> None:
    """Check a 0600 signing_key.pem (what the registry makes) gives no warning."""
    _issued(tmp_path)
    with caplog.at_level(logging.WARNING, logger="edgewise.registry"):
        reg = Registry(tmp_path)
        try:
            reg.rollout("ewz", "1.0.0", "group:line-b")
        finally:
            reg.close()
    assert not [r for r in caplog.records if "signing key" in r.getMessage()]


def test_a_key_file_restored_loose_while_open_is_made_private(
        tmp_path: Path, umask_022: None, caplog: pytest.LogCaptureFixture) -> None:
    """Check a signing_key.pem put back (restored from a backup, readable by others) while
    the registry is open is made 0600 before it signs with it."""
    key = _issued(tmp_path)
    reg = Registry(tmp_path)
    try:
        pem = key.read_bytes()
        key.unlink()
        assert reg.key_state == "lost"
        key.write_bytes(pem)  # umask 022: 0644
        assert _mode(key) == 0o644
        with caplog.at_level(logging.WARNING, logger="edgewise.registry"):
            reg.rollout("ewz", "1.0.0", "group:line-b")
        assert oct(_mode(key)) == "0o600"
        assert any(str(key) in r.getMessage() for r in caplog.records)
    finally:
        reg.close()


# -- a rollback order in another format let an older version through as a plain release ------


def _formats_registry(tmp_path: Path) -> Registry:
    """'ewz' 1.0.0 as a C build (published first), 2.0.0 and 3.0.0 as pickles; device
    pump-7 (no group) given 3.0.0, then a rollback order to the C build 1.0.0."""
    reg = Registry(tmp_path, device_groups=lambda: {"pump-7": [], "pump-8": ["line-a"]})
    reg.publish("ewz", "1.0.0", b"/* C build */", format="c")
    reg.publish("ewz", "2.0.0", b"pickle 2", format="pickle")
    reg.publish("ewz", "3.0.0", b"pickle 3", format="pickle")
    return reg


def test_an_older_pickle_is_no_plain_release_after_a_c_rollback_order(tmp_path: Path) -> None:
    """Check a plain release of an older pickle version to a device offered a newer pickle
    is refused (a rollback order is needed), even when the device's newest release, of
    any format, is a rollback order to an older C build: that release was signed, and the
    agent (asking for pickle) went from 3.0.0 back to 2.0.0 without a rollback order."""
    from edgewise.errors import InvalidParameterError

    reg = _formats_registry(tmp_path)
    try:
        reg.rollout("ewz", "3.0.0", "device:pump-7")
        reg.rollout("ewz", "1.0.0", "device:pump-7", kind="rollback")
        with pytest.raises(InvalidParameterError, match=r"older than '3\.0\.0'") as err:
            reg.rollout("ewz", "2.0.0", "device:pump-7")
        assert err.value.field == "kind"
        assert [r.release for r in reg.releases()] == [1, 2]  # nothing signed
        assert reg.current("pump-7", formats=["pickle"]).version == "3.0.0"
        # going back on purpose is still possible: a rollback order
        order = reg.rollout("ewz", "2.0.0", "device:pump-7", kind="rollback").manifest
        assert (order.kind, order.version) == ("rollback", "2.0.0")
    finally:
        reg.close()


def test_an_older_pickle_to_a_group_after_a_c_rollback_order(tmp_path: Path) -> None:
    """Check the same through a group: line-a's newest release is a rollback order to the C
    build, its member pump-8 is offered pickle 3.0.0; a plain release of pickle 2.0.0 to
    the group is refused."""
    from edgewise.errors import InvalidParameterError

    reg = _formats_registry(tmp_path)
    try:
        reg.rollout("ewz", "3.0.0", "group:line-a")
        reg.rollout("ewz", "1.0.0", "group:line-a", kind="rollback")
        with pytest.raises(InvalidParameterError, match=r"older than '3\.0\.0'"):
            reg.rollout("ewz", "2.0.0", "group:line-a")
        assert reg.current("pump-8", ["line-a"], formats=["pickle"]).version == "3.0.0"
    finally:
        reg.close()


def test_a_newer_pickle_after_a_c_rollback_order_is_a_plain_release(tmp_path: Path) -> None:
    """Check what was allowed stays allowed: a pickle version newer than every release the
    device has (any format) is a plain release, and a rollback order to it is refused."""
    from edgewise.errors import InvalidParameterError

    reg = Registry(tmp_path, device_groups=lambda: {"pump-7": []})
    try:
        reg.publish("ewz", "1.0.0", b"/* C build */", format="c")
        reg.publish("ewz", "2.0.0", b"pickle 2", format="pickle")
        reg.publish("ewz", "3.0.0", b"pickle 3", format="pickle")
        reg.rollout("ewz", "2.0.0", "device:pump-7")
        reg.rollout("ewz", "1.0.0", "device:pump-7", kind="rollback")
        assert reg.rollout("ewz", "3.0.0", "device:pump-7").manifest.kind == "release"
        with pytest.raises(InvalidParameterError, match="not older"):
            reg.rollout("ewz", "3.0.0", "device:pump-7", kind="rollback")
    finally:
        reg.close()


# -- names and versions that list alike --------------------------------------------------------


def test_a_decomposed_name_or_version_is_refused_naming_the_composed_form(
        tmp_path: Path) -> None:
    """Check 'café' typed decomposed (e + combining acute, NFD) is refused at publish,
    naming the composed (NFC) form to use: it was published as a model apart from the
    composed 'café', the two listed alike, and a rollout took whichever the keyboard
    typed."""
    import unicodedata

    from edgewise.errors import InvalidParameterError

    nfc = "caf\u00e9"
    nfd = unicodedata.normalize("NFD", nfc)
    assert nfd != nfc
    reg = Registry(tmp_path)
    try:
        reg.publish(nfc, "1.0.0", b"m", format="pickle")
        for name, version, field, bad in ((nfd, "1.0.0", "name", nfd),
                                          (nfc, f"1.0.0-{nfd}", "version", f"1.0.0-{nfd}")):
            with pytest.raises(InvalidParameterError, match="NFC") as err:
                reg.publish(name, version, b"m", format="pickle")
            assert err.value.field == field
            assert repr(unicodedata.normalize("NFC", bad)) in str(err.value)
        assert [(v.name, v.version) for v in reg.versions()] == [(nfc, "1.0.0")]
    finally:
        reg.close()


def test_an_unprintable_name_is_shown_a_name_as_the_example(tmp_path: Path) -> None:
    """Check the refusal of a name with an unprintable character gives a model name as its
    example, not '1.0.0' (a version)."""
    from edgewise.errors import InvalidParameterError

    reg = Registry(tmp_path)
    try:
        with pytest.raises(InvalidParameterError, match=r"e\.g\. 'ewz'"):
            reg.publish("a\u200bb", "1.0.0", b"m", format="pickle")
    finally:
        reg.close()


# a key file that is no file -------------------------------------------------------------

_OPEN_WITH_FIFO_KEY = """
import sys
from edgewise.registry import Registry, SignatureError, load_key
reg = Registry(sys.argv[1])
print(reg.key_state)
reg.close()
try:
    load_key(sys.argv[1] + "/registry")
except SignatureError as exc:
    print(exc.reason, str(exc))
"""


def test_a_fifo_in_place_of_the_key_is_damaged_not_a_hang(tmp_path: Path) -> None:
    """A FIFO where ``signing_key.pem`` should be (put there by mistake, or by someone who
    wants the gateway stuck) hung every open of the registry on reading it: now the key is
    ``damaged`` (signing refused, serving goes on) and :func:`load_key` says it is no file."""
    import subprocess
    import sys

    _issued(tmp_path)
    pem = tmp_path / "registry" / KEY_FILE
    pem.unlink()
    os.mkfifo(pem, 0o600)
    p = subprocess.run([sys.executable, "-c", _OPEN_WITH_FIFO_KEY, str(tmp_path)],
                       capture_output=True, text=True, timeout=60, check=False)
    assert p.returncode == 0, p.stderr
    state, refusal = p.stdout.splitlines()
    assert state == "damaged"
    assert refusal.startswith("bad_key") and "no regular file" in refusal, refusal


def test_an_oversized_key_file_is_refused_unread(tmp_path: Path) -> None:
    """A key file of megabytes is no key the registry wrote; it is refused naming its size
    limit, not read whole (a link to /dev/zero read for ever)."""
    from edgewise.registry import SignatureError, load_key

    _issued(tmp_path)
    pem = tmp_path / "registry" / KEY_FILE
    pem.write_bytes(pem.read_bytes() + b"\n" * (1 << 20))
    with pytest.raises(SignatureError, match="larger than 65536 bytes"):
        load_key(tmp_path / "registry")
