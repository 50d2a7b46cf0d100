"""The registry's files are the owner's only (README: "mode 0600 whatever the data
directory's mode"): ``registry.sqlite`` was made 0644 and ``registry/``, ``blobs/`` 0755 by
any command run with the usual umask 022."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from edgewise.registry import Registry
from tests.registry.conftest import file_mode as _mode


def test_a_new_registry_is_private(tmp_path: Path, umask_022: None) -> None:
    """Check a registry made under umask 022 has 0700 folders and a 0600 database, WAL
    and shared-memory file."""
    reg = Registry(tmp_path)
    try:
        root = tmp_path / "registry"
        db = root / "registry.sqlite"
        assert {p.name: oct(_mode(p)) for p in (root, root / "blobs", db,
                                                 root / "registry.sqlite-wal",
                                                 root / "registry.sqlite-shm")} == {
            "registry": "0o700", "blobs": "0o700", "registry.sqlite": "0o600",
            "registry.sqlite-wal": "0o600", "registry.sqlite-shm": "0o600"}
    finally:
        reg.close()


def test_an_older_public_registry_database_is_made_private(tmp_path: Path,
                                                           umask_022: None) -> None:
    """Check a registry.sqlite an older version left 0644 is 0600 once opened again."""
    Registry(tmp_path).close()
    db = tmp_path / "registry" / "registry.sqlite"
    os.chmod(db, 0o644)
    sqlite3.connect(db).close()
    reg = Registry(tmp_path)
    try:
        assert oct(_mode(db)) == "0o600"
    finally:
        reg.close()


def test_the_cli_makes_the_registry_private(tmp_path: Path, umask_022: None) -> None:
    """Check 'edgewise registry publish' (a shell's umask 022) leaves no file or folder of
    the registry readable by others."""
    from typer.testing import CliRunner

    from edgewise.cli import app, load_commands

    load_commands()
    model = tmp_path / "m.pkl"
    model.write_bytes(b"model")
    data = tmp_path / "d"
    data.mkdir()
    res = CliRunner(mix_stderr=False).invoke(
        app, ["registry", "publish", "m", "1.0.0", str(model), "--format", "pickle",
              "--data-dir", str(data)])
    assert res.exit_code == 0, res.output + res.stderr
    root = data / "registry"
    loose = {str(p.relative_to(data)): oct(_mode(p)) for p in [root, *root.rglob("*")]
             if _mode(p) & 0o077 and p.name != "signing_key.pub"}  # the public key is public
    assert loose == {}
