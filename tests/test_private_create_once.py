"""``create_private_once``: the one "first writer wins" file step that the registry's signing
key and the gateway's MQTT client id are made with."""

from __future__ import annotations

import errno
import os
import stat
import threading
from pathlib import Path

import pytest

from edgewise._private import create_private_once
from edgewise.registry import KEY_FILE, load_key, load_or_create_key
from edgewise.transport.client import CLIENT_ID_FILE, gateway_client_id


def _others(folder: Path, name: str) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name != name)


def test_the_first_writer_wins_and_no_temporary_file_is_left(tmp_path: Path) -> None:
    f = tmp_path / "id"
    assert create_private_once(f, b"first\n") is True
    assert create_private_once(f, b"second\n") is False
    assert f.read_bytes() == b"first\n"
    assert stat.S_IMODE(f.stat().st_mode) == 0o600
    assert _others(tmp_path, "id") == []


def test_of_writers_racing_exactly_one_makes_the_file(tmp_path: Path) -> None:
    f, n = tmp_path / "key", 8
    start, won = threading.Barrier(n), []

    def write(i: int) -> None:
        start.wait(5)
        if create_private_once(f, f"writer {i}".encode()):
            won.append(i)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(won) == 1
    assert f.read_bytes() == f"writer {won[0]}".encode()
    assert _others(tmp_path, "key") == []


def _no_hard_links(monkeypatch: pytest.MonkeyPatch) -> None:
    """Links refused as on a file system without them (vfat, some network mounts)."""
    def refuse(src: object, dst: object, *a: object, **kw: object) -> None:
        raise OSError(errno.EPERM, "Operation not permitted", str(dst))

    monkeypatch.setattr(os, "link", refuse)


def test_without_hard_links_it_raises_unless_told_to_replace(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _no_hard_links(monkeypatch)
    f = tmp_path / "id"
    with pytest.raises(PermissionError):
        create_private_once(f, b"x")
    assert list(tmp_path.iterdir()) == []  # nothing made, the temporary file removed
    assert create_private_once(f, b"first", replace_without_links=True) is True
    assert create_private_once(f, b"second", replace_without_links=True) is False
    assert f.read_bytes() == b"first" and stat.S_IMODE(f.stat().st_mode) == 0o600
    assert _others(tmp_path, "id") == []


def test_a_missing_folder_is_refused_not_made(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        create_private_once(tmp_path / "absent" / "id", b"x")
    assert list(tmp_path.iterdir()) == []


def test_the_signing_key_is_made_once_and_kept(tmp_path: Path) -> None:
    first = load_or_create_key(tmp_path)
    assert load_or_create_key(tmp_path).key_id == first.key_id
    assert stat.S_IMODE((tmp_path / KEY_FILE).stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == [KEY_FILE, "signing_key.pub"]
    loaded = load_key(tmp_path)
    assert loaded is not None and loaded.key_id == first.key_id


def test_a_signing_key_is_not_made_where_hard_links_are_missing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two processes could each believe their own key won: it is refused instead."""
    _no_hard_links(monkeypatch)
    with pytest.raises(PermissionError):
        load_or_create_key(tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_the_client_id_is_kept_where_hard_links_are_missing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _no_hard_links(monkeypatch)
    cid = gateway_client_id(tmp_path)
    assert gateway_client_id(tmp_path) == cid
    assert (tmp_path / CLIENT_ID_FILE).read_text() == cid + "\n"
    assert _others(tmp_path, CLIENT_ID_FILE) == []


def test_replace_atomically_writes_a_file_whose_name_is_255_characters(tmp_path) -> None:
    """Check a name as long as the file system allows is written: the temp name added
    about 40 characters to it ('File name too long' from 216 characters on)."""
    from edgewise._private import replace_atomically

    target = tmp_path / ("m" * 251 + ".pkl")
    replace_atomically(target, b"x")
    assert target.read_bytes() == b"x" and len(list(tmp_path.iterdir())) == 1
