"""`edgewise registry publish`, `rollout` and `new-key` are audited like HTTP rollouts, by
'cli' as the other CLI actions (HTTP ones by 'token:<id>:<name>':
tests/server/test_registry_api.py)."""

from __future__ import annotations

import base64
from pathlib import Path

from typer.testing import CliRunner

from edgewise.cli import app, load_commands
from edgewise.registry import key_id_of
from edgewise.security import Security

load_commands()


def test_cli_publish_and_rollout_are_audited_by_cli(data_dir: Path, tmp_path: Path) -> None:
    """Check publish and rollout from the CLI each leave one audit entry by 'cli' (they left
    none)."""
    model = tmp_path / "m.pkl"
    model.write_bytes(b"model")
    run = CliRunner(mix_stderr=False)
    for args in (("publish", "ewz", "1.0.0", str(model)),
                 ("rollout", "ewz", "1.0.0", "group:line-a")):
        res = run.invoke(app, ["registry", *args, "--data-dir", str(data_dir)])
        assert res.exit_code == 0, res.stderr
    sec = Security(data_dir)
    got = [(e.actor, e.action, e.target, e.detail) for e in reversed(sec.audit_log())]
    sec.close()
    assert got[0][:3] == ("cli", "model.publish", "ewz")
    assert got[0][3]["version"] == "1.0.0" and got[0][3]["format"] == "pickle"
    assert got[1] == ("cli", "model.rollout", "group:line-a",
                      {"name": "ewz", "version": "1.0.0", "release": 1, "kind": "release"})



def test_cli_new_key_is_audited_with_the_key_it_replaces(data_dir: Path, tmp_path: Path) -> None:
    """Check 'registry new-key', which replaces the key every agent trusts, leaves an audit
    entry naming the new key and the old one (it left none)."""
    model = tmp_path / "m.pkl"
    model.write_bytes(b"model")
    run = CliRunner(mix_stderr=False)
    for args in (("publish", "ewz", "1.0.0", str(model)),
                 ("rollout", "ewz", "1.0.0", "group:line-a")):  # the first rollout makes a key
        res = run.invoke(app, ["registry", *args, "--data-dir", str(data_dir)])
        assert res.exit_code == 0, res.stderr
    old_pub = (data_dir / "registry" / "signing_key.pub").read_text().strip()
    (data_dir / "registry" / "signing_key.pem").unlink()  # lost
    res = run.invoke(app, ["registry", "new-key", "--data-dir", str(data_dir)])
    assert res.exit_code == 0, res.stderr
    new_id = res.stdout.split()[0]
    sec = Security(data_dir)
    last = sec.audit_log()[0]
    sec.close()
    assert (last.actor, last.action, last.target) == ("cli", "registry.new_key", new_id)
    assert last.detail == {"old_key_id": key_id_of(base64.b64decode(old_pub))}
